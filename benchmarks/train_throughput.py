"""Training throughput of `course_lib.train` for the course's networks: steps/s and samples/s.

    python benchmarks/train_throughput.py --device cpu --steps 20
    python benchmarks/train_throughput.py --device cuda --steps 200 --amp --compile

Rows: ScoreMLP on 2-D data (batch 1024), the U-Net on 1x8x8 digits-size images (batch 128) and
on 3x32x32 images (batch 64), each trained with continuous-time DSM (VP SDE, eps-prediction).
`--amp` and `--compile` add rows with bf16 autocast (CUDA only) and torch.compile. Warm-up steps
(and compilation) run first, in a separate call, and are not timed.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from course_lib.distributions import ring_of_gaussians
from course_lib.losses import dsm_loss
from course_lib.nets import MLPConfig, ScoreMLP, UNet, UNetConfig
from course_lib.parameterization import ScoreFromEps
from course_lib.runtime import get_device
from course_lib.sde import VPSDE
from course_lib.train import TrainConfig, train

SDE = VPSDE()


def workloads():
    """(name, model factory, data, batch size): data is a sampler or a CPU tensor."""
    ring = ring_of_gaussians()
    mlp_data = lambda n, g: ring.sample(n, generator=g)
    digits = torch.randn(2048, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cifar = torch.randn(1024, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return [
        ("ScoreMLP 2-D", lambda: ScoreMLP(MLPConfig(dim=2)), mlp_data, 1024),
        ("UNet 1x8x8", lambda: UNet(UNetConfig(image_size=8, channel_mult=(1, 2))), digits, 128),
        ("UNet 3x32x32", lambda: UNet(UNetConfig(image_size=32, in_channels=3)), cifar, 64),
    ]


def loss_fn(model, batch, generator):
    return dsm_loss(model, SDE, batch, generator=generator)


def measure(make, data, batch_size, device, steps, warmup, amp, compile_model):
    """Steps per second of `train` after `warmup` untimed steps (which include compilation)."""
    torch.manual_seed(0)
    model = ScoreFromEps(make(), SDE).to(device)
    ema = copy.deepcopy(model)
    if compile_model:
        model = torch.compile(model)
    base = dict(batch_size=batch_size, amp=amp, lr=1e-4, log_every=max(steps // 4, 1))
    start = time.perf_counter()
    train(model, loss_fn, data, TrainConfig(steps=warmup, **base), device=device, ema_model=ema, progress=False)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.synchronize()
    state = train(model, loss_fn, data, TrainConfig(steps=steps, **base), device=device, ema_model=ema,
                  progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / state.seconds, warmup_s


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: runtime.get_device())")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                        help="add bf16-autocast rows (CUDA only)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="add torch.compile rows")
    parser.add_argument("--compile-on-cpu", action="store_true",
                        help="also compile on the CPU (inductor takes tens of seconds per model there)")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else get_device()

    print(f"device={device}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"timed steps={args.steps}, warm-up steps={args.warmup}")
    header = f"{'model':<14} {'batch':>5} {'amp':>5} {'compile':>7} {'steps/s':>9} {'samples/s':>10}  note"
    print(header + "\n" + "-" * len(header))
    for name, make, data, batch_size in workloads():
        for amp in (False, True) if args.amp else (False,):
            for compile_model in (False, True) if args.compile else (False,):
                row = f"{name:<14} {batch_size:>5} {str(amp):>5} {str(compile_model):>7}"
                skip = _skip_reason(device, amp, compile_model, args.compile_on_cpu)
                if skip:
                    print(f"{row} {'skipped':>9} {'':>10}  {skip}")
                    continue
                rate, warmup_s = measure(make, data, batch_size, device, args.steps, args.warmup, amp, compile_model)
                print(f"{row} {rate:>9.2f} {rate * batch_size:>10.0f}  warm-up {warmup_s:.1f} s", flush=True)


def _skip_reason(device, amp, compile_model, compile_on_cpu) -> str:
    if amp and device.type != "cuda":
        return "bf16 autocast is used on CUDA only"
    if compile_model and device.type == "cpu" and not compile_on_cpu:
        return "CPU compilation takes tens of seconds per model; pass --compile-on-cpu"
    return ""


if __name__ == "__main__":
    main()
