"""The command line's train, sample and evaluate at tiny size for every recipe; every sampler by
name with the NFE it states; a run stopped by SIGTERM resumes to the uninterrupted result; bad
arguments get a message naming the flag, never a traceback."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import cli, cli_samples, datasets, runs
from course_lib.datasets import ImageData
from course_lib.image_features import ClassifierConfig

from run_tiny_cli import TINY


pytestmark = pytest.mark.usefixtures("one_thread")  # as the subprocesses compared with


ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("run_tiny_cli.py")


def fake_split(c, size, n, seed):
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.rand(n, c, size, size, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g),
                     f"fake-{c}x{size}-{n}")


@pytest.fixture
def tiny_cli(monkeypatch, tmp_path):
    """cli.main with the tiny recipes and MNIST / CIFAR-10 replaced by random images of their shape
    (torchvision is not there on the test machine); runs in tmp_path."""
    monkeypatch.setattr(cli, "RECIPES", {**cli.RECIPES, **TINY})
    monkeypatch.setattr(cli_samples, "CLASSIFIER", ClassifierConfig(width=8, batch_size=16))
    for name, c, size in (("load_mnist", 1, 28), ("load_cifar10", 3, 32)):
        monkeypatch.setattr(datasets, name, lambda root, *, train, download, device=None, c=c, size=size:
                            fake_split(c, size, 64 if train else 24, int(train)))
    monkeypatch.chdir(tmp_path)
    return cli.main


def run(main, capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- every recipe at tiny size -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TINY))
def test_train_sample_evaluate_every_recipe(name, tiny_cli, capsys):
    recipe = TINY[name]
    code, out, _ = run(tiny_cli, capsys, "train", name, "--checkpoint-every", 2, "--log-every", 2,
                       "--sample-every", 2, "--grid", 4, "--grid-nfe", 2, "--device", "cpu")
    assert code == 0 and "from scratch, steps 0 -> 4" in out
    run_dir = Path("runs") / name
    assert [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == [2, 4]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    assert runs.latest_checkpoint(run_dir / "checkpoints").name == "step_0000004.pt"

    code, out, _ = run(tiny_cli, capsys, "sample", run_dir, "--nfe", 3, "--n", 5, "--out", "s", "--device", "cpu")
    images = np.load("s.npz")["images"]
    c, size = recipe.unet.in_channels, recipe.unet.image_size
    assert code == 0 and images.shape == (5, size, size, c) and images.dtype == np.uint8
    assert f"5 samples of {name} by default at 3 NFE" in out and Path("s.png").stat().st_size > 0

    code, out, _ = run(tiny_cli, capsys, "evaluate", run_dir, "--n", 16, "--nfe", 2, "--classifier-steps", 2,
                       "--device", "cpu", "--json", "fd.json")
    report = json.loads(Path("fd.json").read_text())
    assert code == 0 and report["n"] == 16 and report["n_test"] == (297 if name.startswith("digits") else 24)
    assert f"16 samples (default, 2 NFE) to the {report['n_test']} test images: {report['fd']:.3f}" in out
    assert "(the data's own value)" in out and report["fd_data"] >= 0


# -- samplers by name ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vp", "ncsn"])
def test_every_sampler_spends_the_nfe_it_states(kind):
    recipe = TINY[f"digits-tiny-{kind}"]
    model = recipe.model().eval()
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    for name, sampler in cli_samples.SAMPLERS.items():
        if kind == "vp" and name == "annealed_langevin":
            with pytest.raises(ValueError, match="needs a sigma-conditioned NCSN recipe"):
                sampler.min_nfe(recipe)
            continue
        if kind == "ncsn" and name == "ode_rk45":
            continue  # seconds of adaptive steps on an untrained model; run once, for vp
        nfe = max(sampler.min_nfe(recipe), 7)
        calls.clear()
        x = runs.generate(recipe, model, sampler.run, 3, nfe, batch_size=2, device="cpu")
        assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all() and x.abs().max() <= 1, name
        spent = sampler.spent(recipe, nfe)
        twos = calls.count(2)  # batches of 2, then of 1 (an adaptive solver may take other steps on each)
        assert twos > 0 and calls == [2] * twos + [1] * (len(calls) - twos), name
        if spent is not None:
            assert twos == len(calls) - twos == spent, f"{name}: {calls.count(1)} evaluations, {spent} stated"


def test_the_default_sampler_is_the_librarys(monkeypatch):
    seen = []
    monkeypatch.setattr(cli_samples.sampling, "sample", lambda *a, nfe: seen.append(nfe) or a[2])
    recipe = TINY["digits-tiny-vp"]
    runs.generate(recipe, recipe.model().eval(), cli_samples.SAMPLERS["default"].run, 2, 9, device="cpu")
    assert seen == [9]


# -- interrupted and resumed ---------------------------------------------------------------------
def test_sigterm_stops_a_run_and_the_same_command_resumes_it_bit_for_bit(tiny_cli, capsys, tmp_path):
    args = ["train", "digits-tiny-vp", "--steps", "40", "--log-every", "5", "--checkpoint-every", "20",
            "--sample-every", "1000", "--grid", "4", "--grid-nfe", "2", "--device", "cpu"]
    stopped, straight = ["--run-dir", str(tmp_path / "stopped")], ["--run-dir", str(tmp_path / "straight")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-u", str(WORKER), *args, *stopped], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline() + proc.stdout.readline()  # the header, then the log line of step 5
    proc.send_signal(signal.SIGTERM)  # what a preempted machine or torchrun's shutdown sends
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, first + out + err
    assert "SIGTERM: stopping at the next log point" in err and "Traceback" not in err
    step = int(out.split("stopped at step ")[1].split(",")[0])
    assert 5 < step < 40 and step % 5 == 0 and (tmp_path / "stopped" / "checkpoints" / f"step_{step:07d}.pt").is_file()

    code, out, _ = run(tiny_cli, capsys, *args, *stopped)  # the same command, run again
    assert code == 0 and f"resuming {tmp_path / 'stopped'}" in out and f"steps {step} -> 40" in out
    assert run(tiny_cli, capsys, *args, *straight)[0] == 0
    recipe = TINY["digits-tiny-vp"]
    a = runs.load_model(recipe, tmp_path / "stopped" / "weights.pt").state_dict()
    b = runs.load_model(recipe, tmp_path / "straight" / "weights.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- bad arguments -------------------------------------------------------------------------------
@pytest.fixture
def trained(tiny_cli, capsys):
    assert tiny_cli(["train", "digits-tiny-vp", "--run-dir", "vp", "--device", "cpu", "--sample-every", "100"]) == 0
    capsys.readouterr()
    return Path("vp")


def assert_error(main, capsys, argv, *expected, code=2):
    if code == "argparse":
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
    else:
        returned, _, err = run(main, capsys, *argv)
        assert returned == code, err
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err


def test_unknown_recipe_and_sampler_and_bad_numbers_name_the_flag(tiny_cli, capsys, trained):
    assert_error(tiny_cli, capsys, ["train", "no-such-recipe"], "invalid choice: 'no-such-recipe'", code="argparse")
    assert_error(tiny_cli, capsys, ["sample", trained, "--sampler", "nope"], "--sampler", "invalid choice: 'nope'",
                 code="argparse")
    assert_error(tiny_cli, capsys, ["sample", trained, "--n", "0"], "--n", "must be a positive integer",
                 code="argparse")
    assert_error(tiny_cli, capsys, ["sample", trained, "--sampler", "heun_ode", "--nfe", 1],
                 "error: --nfe 1 is too few for --sampler heun_ode", "at least 2")
    assert_error(tiny_cli, capsys, ["sample", trained, "--sampler", "annealed_langevin"],
                 "error: --sampler annealed_langevin needs a sigma-conditioned NCSN recipe")
    assert_error(tiny_cli, capsys, ["evaluate", trained, "--n", 5000], "error: --n 5000 exceeds the 1500")


def test_a_checkpoint_of_another_recipe_is_refused(tiny_cli, capsys, trained, monkeypatch):
    assert_error(tiny_cli, capsys, ["sample", trained, "--recipe", "digits-tiny-ncsn"],
                 "error: --recipe digits-tiny-ncsn does not match checkpoint vp, made by recipe 'digits-tiny-vp'")
    assert_error(tiny_cli, capsys, ["train", "digits-tiny-ncsn", "--run-dir", trained],
                 "error: --run-dir vp: vp/checkpoints/step_0000004.pt was made by recipe 'digits-tiny-vp', "
                 "not 'digits-tiny-ncsn'; choose another --run-dir")
    changed = dataclasses.replace(TINY["digits-tiny-vp"], beta_max=10.0)
    monkeypatch.setitem(cli.RECIPES, "digits-tiny-vp", changed)
    assert_error(tiny_cli, capsys, ["sample", trained / "weights.pt"],
                 "made by recipe 'digits-tiny-vp' with other settings than 'digits-tiny-vp' has now")
    monkeypatch.delitem(cli.RECIPES, "digits-tiny-vp")
    assert_error(tiny_cli, capsys, ["evaluate", trained], "made by recipe 'digits-tiny-vp', which this course_lib "
                 "does not have")


def test_unreadable_newer_and_missing_checkpoints_are_refused(tiny_cli, capsys, trained):
    ckpt = torch.load(trained / "checkpoints" / "step_0000004.pt", weights_only=True)
    torch.save({**ckpt, "checkpoint_format": 99}, "newer.pt")
    assert_error(tiny_cli, capsys, ["sample", "newer.pt"], "checkpoint newer.pt", "checkpoint format 99",
                 "update course_lib")
    assert_error(tiny_cli, capsys, ["train", "digits-tiny-vp", "--resume", "newer.pt"],
                 "error: --resume newer.pt", "checkpoint format 99")
    Path("corrupt.pt").write_bytes(b"half a checkpoint")
    assert_error(tiny_cli, capsys, ["sample", "corrupt.pt"], "corrupt.pt is not a readable checkpoint")
    assert_error(tiny_cli, capsys, ["sample", "absent.pt"], "no weights file or checkpoint at absent.pt")
    assert_error(tiny_cli, capsys, ["sample", "."], "holds neither weights.pt nor checkpoints/step_*.pt")


def test_a_missing_data_set_says_how_to_get_it(tiny_cli, capsys, monkeypatch):
    def unavailable(root, **kwargs):
        raise datasets.DatasetUnavailable("torchvision is not installed or failed to import")

    monkeypatch.setattr(datasets, "load_mnist", unavailable)
    assert_error(tiny_cli, capsys, ["train", "mnist-tiny-vp", "--data-root", "nowhere"],
                 "error: --data-root nowhere: the mnist training split is not available",
                 "torchvision is not installed", "install torchvision", "without --no-download",
                 "about 12 MB")
