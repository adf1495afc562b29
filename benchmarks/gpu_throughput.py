"""The recipes at full size on one GPU: training images/s with torch.compile and bf16 autocast
each on and off (then channels-last on top of both), peak GPU memory, sampling images/s at 10,
20 and 50 NFE, and, in the same run, the tutorial style of training for the ratio between the two.

    python benchmarks/gpu_throughput.py                          # every recipe, on the GPU
    python benchmarks/gpu_throughput.py --recipes mnist-vp cifar10-vp --steps 200
    python benchmarks/gpu_throughput.py --quick --device cpu     # tiny sizes: checks that it runs

The course's path is `course_lib.train.train` as `python -m course_lib.cli train` runs it: the
training set resident on the device (every batch drawn there, no data loader), bf16 autocast,
`torch.compile`, fused AdamW, an EMA of the weights and gradient clipping. Warm-up steps (and
compilation) run first and are not timed; the clock reads at log points, which synchronize.

The tutorial style is the training loop of the well-known tutorial implementations of score
models (e.g. Song's score-SDE tutorial notebook): fp32, eager, the images in a CPU
`torch.utils.data.DataLoader` (shuffled; already decoded tensors, which spares it the PIL
decoding and `ToTensor` of the tutorials, so it is measured at its fastest), each batch copied to
the GPU, plain Adam, no EMA and no clipping. It is measured on two networks, each also trained
the course's way, so every ratio compares equal model sizes:

- `TutorialUNet`: the tutorial's small time-conditioned U-Net (4 resolutions of 32, 64, 128 and
  256 channels, Gaussian Fourier time features, about 1.1 M parameters), with the course's
  continuous-time DSM loss under the VP SDE;
- each recipe's own U-Net and loss.

Rows that cannot run on the device say why (bf16 autocast is used on CUDA only). On a CPU the
compiled rows use torch.compile's "eager" backend (traced, not code-generated: inductor's CPU
compilation takes minutes), so they check the code path, not its speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import torch
from torch import nn

from course_lib import cli, recipes, runs
from course_lib.cli_samples import SAMPLERS, fast_cuda
from course_lib.losses import dsm_loss
from course_lib.parameterization import ScoreFromEps
from course_lib.runtime import get_device
from course_lib.sde import VPSDE
from course_lib.train import Speed, train
from course_lib.utils import append_dims

NFES = (10, 20, 50)


# -- the tutorial's network ----------------------------------------------------------------------
class TutorialUNet(nn.Module):
    """The small time-conditioned U-Net of Song's score-SDE tutorial (its `ScoreNet`): four
    resolutions, 3x3 convolutions of stride 2 without padding, a dense projection of Gaussian
    Fourier time features added in every block, GroupNorm and SiLU, transposed convolutions with
    skip connections back up. It predicts the noise eps(x, t): (B, C, H, W) for t: (B,)."""

    def __init__(self, image_size: int, in_channels: int, channels=(32, 64, 128, 256), embed_dim: int = 256):
        super().__init__()
        self.register_buffer("freqs", torch.randn(embed_dim // 2, generator=torch.Generator().manual_seed(0)) * 30)
        self.embed = nn.Linear(embed_dim, embed_dim)
        sizes = [image_size - 2]  # 28 -> 26 -> 12 -> 5 -> 2; 32 -> 30 -> 14 -> 6 -> 2
        for _ in range(3):
            sizes.append((sizes[-1] - 3) // 2 + 1)
        ins = (in_channels,) + tuple(channels[:-1])
        self.down = nn.ModuleList(nn.Conv2d(i, o, 3, stride=1 if k == 0 else 2, bias=False)
                                  for k, (i, o) in enumerate(zip(ins, channels)))
        self.up = nn.ModuleList()
        for k in (3, 2, 1):  # from sizes[k] back to sizes[k - 1]
            c_in = channels[k] if k == 3 else 2 * channels[k]
            pad = sizes[k - 1] - ((sizes[k] - 1) * 2 + 3)
            self.up.append(nn.ConvTranspose2d(c_in, channels[k - 1], 3, stride=2, bias=False, output_padding=pad))
        self.last = nn.ConvTranspose2d(2 * channels[0], in_channels, 3, stride=1)
        widths = list(channels) + [channels[2], channels[1], channels[0]]
        self.dense = nn.ModuleList(nn.Linear(embed_dim, w) for w in widths)
        self.norms = nn.ModuleList(nn.GroupNorm(4 if k == 0 else 32, w) for k, w in enumerate(widths))

    def _block(self, h, k, embed):
        return nn.functional.silu(self.norms[k](h + append_dims(self.dense[k](embed), h.ndim)))

    def forward(self, x, t):
        angles = 2 * torch.pi * torch.outer(t, self.freqs)
        embed = nn.functional.silu(self.embed(torch.cat([angles.sin(), angles.cos()], dim=-1)))
        skips, h = [], x
        for k, conv in enumerate(self.down):
            h = self._block(conv(h), k, embed)
            skips.append(h)
        for k, conv in enumerate(self.up):
            h = self._block(conv(h if k == 0 else torch.cat([h, skips[3 - k]], dim=1)), 4 + k, embed)
        return self.last(torch.cat([h, skips[0]], dim=1))


@dataclasses.dataclass(frozen=True)
class Workload:
    """A network and its loss, trained both ways: make() -> model, loss(model, batch, generator)."""

    name: str
    make: object
    loss: object
    batch_size: int
    train: object  # the recipe's TrainConfig (lr, EMA, clipping, amp)


def workloads(recipe: recipes.Recipe, batch_size: int) -> list[Workload]:
    """The recipe's own network, then the tutorial's U-Net on the recipe's images (28x28 and up:
    its four unpadded resolutions need them)."""
    c, size = recipe.unet.in_channels, recipe.unet.image_size
    sde = VPSDE()
    tutorial = Workload(f"TutorialUNet {c}x{size}x{size}", lambda: ScoreFromEps(TutorialUNet(size, c), sde),
                        lambda model, batch, g: dsm_loss(model, sde, batch, generator=g), batch_size, recipe.train)
    own = Workload(recipe.name, recipe.model, recipe.loss, batch_size, recipe.train)
    return [own, tutorial] if size >= 28 else [own]


# -- measurements --------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device):
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f}" if device.type == "cuda" else "n/a"


def course_rate(work: Workload, images, device, args, *, compile: bool, bf16: bool,
                channels_last: bool = False) -> float:
    """Images/s of `train` (data on the device) between its first log point, after `args.warmup`
    steps, and its last, `args.steps` steps later."""
    timed = args.warmup * max(1, round(args.steps / args.warmup))
    config = dataclasses.replace(work.train, steps=args.warmup + timed, batch_size=work.batch_size,
                                 log_every=args.warmup, amp=bf16, checkpoint_every=0, checkpoint_dir=None)
    backend = "inductor" if device.type == "cuda" else "eager"
    clock = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = work.make()
    train(model, work.loss, images, config, device=device, progress=False,
          speed=Speed(compile=compile, compile_backend=backend, channels_last=channels_last),
          callback=lambda state: clock.append(time.perf_counter()))
    return timed * work.batch_size / (clock[-1] - clock[0])


def tutorial_rate(work: Workload, images_cpu, device, args) -> float:
    """Images/s of the tutorials' loop: DataLoader batches copied to the device, fp32, eager, Adam."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images_cpu), batch_size=work.batch_size,
                                         shuffle=True, drop_last=True, num_workers=args.workers,
                                         persistent_workers=args.workers > 0)
    torch.manual_seed(0)
    model = work.make().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=work.train.lr)
    generator = torch.Generator(device=device).manual_seed(0)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        (x,) = next(batches)
        loss = work.loss(model, x.to(device), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _sync(device)
    return args.steps * work.batch_size / (time.perf_counter() - start)


def sampling_rate(recipe, model, device, n: int, nfe: int) -> float:
    """Images/s of the default sampler (`sampling.sample`, batched, under inference_mode)."""
    runs.generate(recipe, model, SAMPLERS["default"].run, min(n, 8), nfe, batch_size=n, device=device)  # warm-up
    _sync(device)
    start = time.perf_counter()
    runs.generate(recipe, model, SAMPLERS["default"].run, n, nfe, batch_size=n, device=device)
    _sync(device)
    return n / (time.perf_counter() - start)


# -- tables --------------------------------------------------------------------------------------
def training_table(recipe, images, device, args, done: set) -> list[tuple[str, float, float]]:
    """Print the training rows of `recipe` (networks not in `done`, which gets their names);
    returns (network, tutorial images/s, best course images/s) for each."""
    ratios = []
    for work in workloads(recipe, args.batch_size or recipe.train.batch_size):
        if work.name in done:
            continue  # the tutorial's network on a data set measured already
        done.add(work.name)
        params = recipes.parameter_count(work.make()) / 1e6
        best = 0.0
        cuda = device.type == "cuda"
        for compile, bf16, nhwc in [(c, b, False) for c, b in itertools.product((False, True), repeat=2)] + [
                (True, cuda, True)]:  # the fastest setting, then with channels-last (--channels-last)
            row = f"{work.name:<22} {params:>6.2f}M {work.batch_size:>5} {_on(compile):>7} {_on(bf16):>5}"
            if bf16 and not cuda:
                print(f"{row} {'skipped':>10} {'':>8}  bf16 autocast is used on CUDA only")
                continue
            _reset_memory(device)
            rate = course_rate(work, images, device, args, compile=compile, bf16=bf16, channels_last=nhwc)
            best = max(best, rate)
            note = ("channels-last " if nhwc else "") + ("eager backend (traced only)" if compile and not cuda else "")
            print(f"{row} {rate:>10,.1f} {_peak_mb(device):>8}  course_lib.train {note}", flush=True)
        _reset_memory(device)
        base = tutorial_rate(work, images.cpu(), device, args)
        print(f"{work.name:<22} {params:>6.2f}M {work.batch_size:>5} {'off':>7} {'off':>5} {base:>10,.1f} "
              f"{_peak_mb(device):>8}  tutorial style (DataLoader, {args.workers} workers)", flush=True)
        ratios.append((work.name, base, best))
    return ratios


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def main(argv=None) -> int:
    args = parse(argv)
    if args.quick:
        torch.set_num_threads(1)  # a check that it runs, on a shared machine
    device = get_device(args.device)
    fast_cuda(device)
    chosen = [recipes.tiny(r) if args.quick else r for r in recipes.ALL if r.name in args.recipes]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"device: {device} ({name}); torch {torch.__version__}; {args.steps} timed steps after {args.warmup} "
          f"warm-up steps")
    if args.quick:
        print("--quick: tiny recipes on random images, a few steps; the numbers check that the script runs "
              "and measure nothing")
    header = f"{'network':<22} {'params':>7} {'batch':>5} {'compile':>7} {'bf16':>5} {'images/s':>10} {'peak MB':>8}"
    print(f"\ntraining\n{header}\n{'-' * len(header)}")
    ratios, samplers, done = [], {}, set()
    for recipe in chosen:
        images = _images(recipe, args).to(device)
        ratios += training_table(recipe, images, device, args, done)
        model = recipe.model().to(device).eval()
        samplers[recipe.name] = [sampling_rate(recipe, model, device, args.samples, nfe) for nfe in NFES]
    print(f"\ncourse_lib's best row / the tutorial style at equal model size (goal: 3x)\n"
          f"{'network':<22} {'tutorial':>10} {'course':>10} {'ratio':>6}")
    for work, base, best in ratios:
        print(f"{work:<22} {base:>10,.1f} {best:>10,.1f} {best / base:>5.1f}x")
    print(f"\nsampling (images/s, default sampler, {args.samples} per batch, eager, inference_mode)\n"
          f"{'recipe':<22} " + " ".join(f"{f'{nfe} NFE':>9}" for nfe in NFES))
    for recipe_name, rates in samplers.items():
        print(f"{recipe_name:<22} " + " ".join(f"{r:>9,.1f}" for r in rates))
    return 0


def _images(recipe, args):
    """The recipe's training images (N, C, H, W); random ones of its shape with --quick or --random-data."""
    if args.quick or args.random_data:
        c, size = recipe.unet.in_channels, recipe.unet.image_size
        return torch.rand(512, c, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return cli.load_split(recipe, True, args.data_root, True, "cpu").images


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [r.name for r in recipes.ALL]
    p.add_argument("--recipes", nargs="+", choices=names, default=names, help="which recipes (default: all)")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    p.add_argument("--steps", type=int, default=100, help="timed training steps per row (100)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before them, compilation included (20)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: each recipe's)")
    p.add_argument("--samples", type=int, default=500, help="images per sampling batch (500)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the tutorial style (4)")
    p.add_argument("--data-root", default="data", help="where the data sets are (downloaded when missing)")
    p.add_argument("--random-data", action="store_true", help="random images of each recipe's shape")
    p.add_argument("--quick", action="store_true",
                   help="tiny recipes, random data, 2 timed steps, 8 samples, no workers: checks the script runs")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.samples, args.workers = 2, 1, 8, 0
    for flag in ("steps", "warmup", "samples"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be a positive integer")
    if args.workers < 0:
        p.error("--workers must be >= 0")
    return args


if __name__ == "__main__":
    raise SystemExit(main())
