"""Data parallelism and preemption: a two-process torchrun run on gloo equals one process running
the same shards, resumes at another world size, and a run stopped by a signal resumes to the same
result bit for bit; the GPU-only speed options run on the CPU too."""

import dataclasses
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from course_lib import distributed, recipes
from course_lib.checkpoints import read_checkpoint
from course_lib.digits_classifier import digits_split
from course_lib.train import Speed, TrainConfig, train

from run_tiny_cli import TINY


pytestmark = pytest.mark.usefixtures("one_thread")  # as the subprocesses compared with


ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("run_tiny_cli.py")
RECIPE = TINY["digits-tiny-vp"]


def digits():
    return digits_split()[0].images


def cli_config(run_dir, steps, **changes):
    """The TrainConfig that `cli train --steps ... --checkpoint-every 3 --log-every 3` uses."""
    return dataclasses.replace(RECIPE.train, steps=steps, checkpoint_every=3, log_every=3,
                               checkpoint_dir=str(Path(run_dir) / "checkpoints"), **changes)


def assert_same_run(a: dict, b: dict, **tolerance):
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], **tolerance, msg=f"{key}.{name}")
    torch.testing.assert_close(torch.tensor(a["loss_history"]), torch.tensor(b["loss_history"]), **tolerance)


def state_dicts(state) -> dict:
    return {"model": state.model.state_dict(), "ema": state.ema_model.state_dict(),
            "loss_history": state.loss_history}


# -- shards --------------------------------------------------------------------------------------
def test_shards_split_the_batch_and_the_ranks():
    assert [distributed.shard_slice(12, 3, k) for k in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    assert [list(distributed.rank_shards(4, 2, r)) for r in range(2)] == [[0, 1], [2, 3]]
    assert distributed.shard_seed(7, 0) == 8  # a one-process run keeps its generator seed + 1
    assert len({distributed.shard_seed(7, k, s) for k in range(3) for s in (0, 10)}) == 6
    with pytest.raises(ValueError, match="batch_size=10 must be divisible by the number of shards"):
        distributed.plan_shards(None, 4, 1, 10)
    with pytest.raises(ValueError, match="shards=3 must be a multiple of the world size 2"):
        distributed.plan_shards(None, 3, 2, 12)
    assert distributed.plan_shards(4, None, 2, 8) == 4  # 2 processes run the 4 shards of a checkpoint
    with pytest.warns(UserWarning, match="fresh seeded noise"):
        assert distributed.plan_shards(1, None, 2, 8) == 2  # a one-process run resumed on two


def test_one_process_is_world_size_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    dist, device = distributed.init("cpu")
    assert dist == distributed.Dist() and dist.is_main and not dist.enabled and device.type == "cpu"
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK=2 must lie in"):
        distributed.from_env()


# -- torchrun ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    """`cli train` of the tiny digits recipe under torchrun, 2 processes on gloo, 6 steps with
    checkpoints at 3 and 6 (read back here)."""
    run_dir = tmp_path_factory.mktemp("torchrun")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER),
           "train", RECIPE.name, "--run-dir", str(run_dir), "--steps", "6", "--checkpoint-every", "3",
           "--log-every", "3", "--keep", "5", "--sample-every", "1000", "--grid", "4", "--grid-nfe", "2",
           "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "over 2 process(es)" in proc.stdout and proc.stdout.count("wrote") == 1  # rank 0 writes alone
    return run_dir


def test_torchrun_equals_one_process_running_the_same_shards(torchrun_run):
    ckpt = read_checkpoint(torchrun_run / "checkpoints" / "step_0000006.pt")
    assert ckpt["shards"] == 2 and ckpt["world_size"] == 2 and len(ckpt["rng"]["ranks"]) == 2
    torch.manual_seed(0)
    one = recipes.train_recipe(RECIPE, digits(), config=cli_config(torchrun_run / "one", 6), device="cpu",
                               shards=2, progress=False)
    # the same examples and noise per step; DDP's all-reduce sums in another order than the
    # accumulation of one process, so the two agree to float32 round-off, not bit for bit
    assert_same_run(state_dicts(one), ckpt, rtol=1e-5, atol=1e-6)
    loaded = recipes.load_weights(RECIPE, torchrun_run / "weights.pt")
    torch.testing.assert_close(loaded.state_dict(), ckpt["ema"])


def test_a_torchrun_checkpoint_resumes_in_one_process(torchrun_run, tmp_path):
    one = recipes.train_recipe(RECIPE, digits(), config=cli_config(tmp_path, 6), device="cpu", progress=False,
                               resume=torchrun_run / "checkpoints" / "step_0000003.pt")
    assert one.shards == 2 and one.step == 6
    assert_same_run(state_dicts(one), read_checkpoint(torchrun_run / "checkpoints" / "step_0000006.pt"),
                    rtol=1e-5, atol=1e-6)


def test_resuming_with_other_shards_draws_fresh_noise_but_the_same_examples(tmp_path):
    config = cli_config(tmp_path, 6)
    first = recipes.train_recipe(RECIPE, digits(), config=dataclasses.replace(config, steps=3), device="cpu",
                                 shards=2, progress=False)
    straight = recipes.train_recipe(RECIPE, digits(), config=config, device="cpu", shards=2, progress=False)
    again = recipes.train_recipe(RECIPE, digits(), config=config, device="cpu", shards=1, progress=False,
                                 resume=first.checkpoint_path)
    assert again.shards == 1 and again.loss_history[:3] == straight.loss_history[:3]
    assert again.loss_history[3:] != straight.loss_history[3:]  # another draw of the noise
    assert again.data_generator.get_state().equal(straight.data_generator.get_state())


# -- signals -------------------------------------------------------------------------------------
def test_a_signal_stops_the_run_with_a_checkpoint_and_resuming_is_bit_identical(tmp_path):
    config = TrainConfig(steps=12, batch_size=8, lr=1e-3, ema_decay=0.9, log_every=4, seed=5,
                         checkpoint_dir=str(tmp_path))
    torch.manual_seed(0)
    straight = recipes.train_recipe(RECIPE, digits(), config=config, device="cpu", progress=False)

    calls = []

    def interrupting_loss(model, batch, generator):
        calls.append(None)
        if len(calls) == 6:  # Ctrl-C during step 6: the run goes on to its log point at step 8
            os.kill(os.getpid(), signal.SIGINT)
        return RECIPE.loss(model, batch, generator)

    torch.manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = RECIPE.model()
    before = signal.getsignal(signal.SIGINT)
    stopped = train(model, interrupting_loss, digits(), config, device="cpu", progress=False, handle_signals=True)
    assert stopped.interrupted and stopped.step == 8 and stopped.checkpoint_path.name == "step_0000008.pt"
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    torch.manual_seed(123)  # another global state: the checkpoint restores it
    resumed = recipes.train_recipe(RECIPE, digits(), config=config, device="cpu", progress=False,
                                   resume=stopped.checkpoint_path)
    assert resumed.step == 12 and resumed.loss_history == straight.loss_history
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(resumed.ema_model.state_dict().values(), straight.ema_model.state_dict().values()):
        assert torch.equal(a, b)


# -- the GPU's speed options, on the CPU ---------------------------------------------------------
def test_compile_channels_last_and_fused_adamw_follow_the_plain_run(tmp_path):
    config = TrainConfig(steps=3, batch_size=8, lr=1e-3, ema_decay=0.9, log_every=3, seed=1, checkpoint_every=3,
                         checkpoint_dir=str(tmp_path))
    runs = {}
    for name, speed in (("plain", Speed()),
                        ("fast", Speed(compile=True, compile_backend="eager", channels_last=True, fused_adamw=True))):
        torch._dynamo.reset()
        runs[name] = recipes.train_recipe(RECIPE, digits(), config=dataclasses.replace(
            config, checkpoint_dir=str(tmp_path / name)), device="cpu", progress=False, speed=speed)
    fast, plain = runs["fast"], runs["plain"]
    assert fast.optimizer.param_groups[0]["fused"] and not plain.optimizer.param_groups[0].get("fused")
    # the same steps up to round-off: NHWC convolutions and the fused AdamW kernel sum in another order
    assert_same_run(state_dicts(fast), state_dicts(plain), rtol=1e-4, atol=1e-5)
    assert list(fast.model.state_dict()) == list(plain.model.state_dict())  # compiled in place: same keys
    # a checkpoint of the fused optimizer resumes with the plain one (a GPU run on a CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        more = recipes.train_recipe(RECIPE, digits(), config=dataclasses.replace(
            config, steps=4, checkpoint_dir=str(tmp_path / "fast")), device="cpu", progress=False,
            resume=fast.checkpoint_path)
    assert more.step == 4 and not more.optimizer.param_groups[0].get("fused")
