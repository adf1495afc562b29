"""The command line's `train` command (part of `course_lib.cli`, which adds it, with `sample` and
`evaluate` from `cli_samples`, to its parser through `run_commands`).

    python -m course_lib.cli train mnist-vp --run-dir runs/mnist-vp       # again to resume
    torchrun --standalone --nproc-per-node=8 -m course_lib.cli train cifar10-vp
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from . import distributed, recipes, runs
from .checkpoints import CheckpointError, read_checkpoint
from .cli_samples import SAMPLERS, data_flags, fast_cuda, positive, sample_commands
from .train import Speed


# -- train ---------------------------------------------------------------------------------------
def _resume_point(recipe, args, checkpoint_dir: Path) -> tuple[Path | None, int]:
    """The checkpoint to resume from (--resume, else the run folder's latest) and its step,
    refused with the flag named when it belongs to another recipe or cannot be read."""
    path = Path(args.resume) if args.resume else runs.latest_checkpoint(checkpoint_dir)
    if path is None:
        return None, 0
    flag = f"--resume {args.resume}" if args.resume else f"--run-dir {args.run_dir}"
    try:
        ckpt = read_checkpoint(path)
        meta = ckpt.get("meta", {})
        runs.check_identity(recipe, meta.get("recipe"), meta.get("fingerprint"), path)
    except (CheckpointError, runs.ModelFileError) as err:
        raise ValueError(f"{flag}: {err}; choose another --run-dir (or --resume) for {recipe.name}") from None
    return path, int(ckpt["step"])


def _training_split(recipe, args, cli, dist, device):
    """The training images on this rank's device. Under torchrun the first process of each machine
    (local rank 0) downloads them when missing while the others wait, then they read its copy."""
    first = dist.local_rank == 0
    if first:
        images = cli.load_split(recipe, True, args.data_root, args.download, device).images
    distributed.barrier()
    if not first:
        images = cli.load_split(recipe, True, args.data_root, False, device).images
    return images


def train_command(args, cli) -> int:
    dist, device = distributed.init(args.device)
    try:
        return _train(args, cli, dist, device)
    finally:
        distributed.close()


def _train(args, cli, dist, device) -> int:
    recipe = cli.RECIPES[args.recipe]
    args.run_dir = args.run_dir or f"runs/{recipe.name}"
    run_dir = Path(args.run_dir)
    resume, start = _resume_point(recipe, args, run_dir / "checkpoints")
    changes = dict(checkpoint_dir=str(run_dir / "checkpoints"), checkpoint_every=args.checkpoint_every,
                   log_every=args.log_every, **({"steps": args.steps} if args.steps else {}))
    config = dataclasses.replace(recipe.train, **changes)
    images = _training_split(recipe, args, cli, dist, device)
    fast_cuda(device)
    speed = Speed(compile=args.compile if args.compile is not None else device.type == "cuda",
                  channels_last=args.channels_last)

    def sample(model, step):
        grid = runs.generate(recipe, model, SAMPLERS["default"].run, args.grid, args.grid_nfe, device=device)
        runs.save_grid(grid, run_dir / "samples" / f"step_{step:07d}.png")

    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"{recipe.name}: {'resuming ' + str(resume) if resume else 'from scratch'}, steps {start} -> "
              f"{config.steps}, global batch {config.batch_size} over {dist.world_size} process(es) on {device}, "
              f"{len(images)} images, compile {speed.compile}, bf16 {config.amp and device.type == 'cuda'}", flush=True)
    log = runs.RunLog(run_dir, config.batch_size, start_step=start, sample=sample, sample_every=args.sample_every,
                      keep=args.keep)
    state = recipes.train_recipe(recipe, images, config=config, device=device, resume=resume, progress=False,
                                 speed=speed, handle_signals=True, meta=runs.identity(recipe), callback=log)
    if state.interrupted:
        if dist.is_main:
            print(f"stopped at step {state.step}, checkpoint {state.checkpoint_path}; the same command resumes")
        return 130
    if dist.is_main:
        model = state.ema_model if state.ema_model is not None else state.model
        path = recipes.save_weights(recipe, model, run_dir / "weights.pt", steps=state.step, seconds=state.seconds)
        sample(model.eval(), state.step)
        print(f"wrote {path} after {state.step} steps ({state.seconds / 60:.1f} min in this process)")
    return 0


# -- the parser ----------------------------------------------------------------------------------
def run_commands(sub, cli) -> None:
    """Add train, sample and evaluate to the subparsers of `cli.parser()`."""
    recipe_names = sorted(cli.RECIPES)
    t = sub.add_parser("train", help="train a recipe in a run folder, resuming from its last checkpoint")
    t.add_argument("recipe", choices=recipe_names, help="which recipe")
    t.add_argument("--run-dir", default=None, help="the run folder (default runs/<recipe>)")
    t.add_argument("--steps", type=positive, default=None, help="train up to this step (default: the recipe's)")
    t.add_argument("--resume", default=None, help="a checkpoint to resume from (default: the run folder's latest)")
    t.add_argument("--checkpoint-every", type=positive, default=1000, help="steps between checkpoints (1000)")
    t.add_argument("--keep", type=positive, default=2, help="checkpoints kept (the latest; default 2)")
    t.add_argument("--log-every", type=positive, default=100, help="steps between log lines (100)")
    t.add_argument("--sample-every", type=positive, default=2000, help="steps between sample grids (2000)")
    t.add_argument("--grid", type=positive, default=64, help="images per sample grid (64)")
    t.add_argument("--grid-nfe", type=positive, default=20, help="NFE of the grids' default sampler (20)")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on CUDA)")
    t.add_argument("--channels-last", action="store_true", help="NHWC memory format (measure it: benchmarks/)")
    data_flags(t)
    t.set_defaults(run=lambda args: train_command(args, cli))
    sample_commands(sub, cli)
