"""The command line's `sample` and `evaluate` commands and the samplers they run by name (part
of `course_lib.cli`; `cli_runs.run_commands` adds them to its parser). A sampler's name on the
command line is its function's name in the library; `default` is `sampling.sample`.

    python -m course_lib.cli sample runs/mnist-vp --sampler heun_ode --nfe 50 --n 64 --out heun
    python -m course_lib.cli evaluate runs/mnist-vp --sampler default --nfe 20 --n 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import dpm_solver, multistep, recipes, runs, sampling, samplers
from .image_features import ClassifierConfig
from .langevin import annealed_langevin
from .runtime import get_device


# -- samplers by name ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampler:
    """A sampler as the command line runs it: run(recipe, model, x_T, nfe, generator) -> x_0."""

    run: Callable
    min_nfe: Callable[[recipes.Recipe], int]  # the fewest evaluations it can spend for a recipe
    spent: Callable[[recipes.Recipe, int], int | None] = lambda recipe, nfe: nfe  # NFE used for --nfe; None: adaptive


def _on_grid(sampler, grid, per_step: int = 1) -> Sampler:
    """A fixed-grid sampler(score_fn, sde, x, ts) on grid(sde, nfe // per_step) (Heun, PC and
    DPM-Solver-k spend per_step evaluations per step)."""
    def run(recipe, model, x, nfe, generator):
        sde = recipe.sde()
        ts = grid(sde, nfe // per_step, device=x.device, dtype=x.dtype)
        return sampler(recipe.time_score(model), sde, x, ts, generator=generator)
    return Sampler(run, lambda recipe: per_step, lambda recipe, nfe: nfe // per_step * per_step)


def _default(recipe, model, x, nfe, generator):
    return sampling.sample(recipe.time_score(model), recipe.sde(), x, nfe=nfe)


def _singlestep(recipe, model, x, nfe, generator):
    sde = recipe.sde()
    ts, orders = dpm_solver.singlestep_plan(sde, nfe, 3, device=x.device, dtype=x.dtype)
    return dpm_solver.dpm_solver_singlestep(recipe.time_score(model), sde, x, ts, orders=orders)


def _rk45(recipe, model, x, nfe, generator):  # adaptive: the tolerance sets the NFE, not --nfe
    return samplers.ode_rk45(recipe.time_score(model), recipe.sde(), x, rtol=1e-5, atol=1e-5)[0]


def _annealed_min_nfe(recipe) -> int:
    if not isinstance(recipe, recipes.NCSNRecipe):
        raise ValueError(f"--sampler annealed_langevin needs a sigma-conditioned NCSN recipe; {recipe.name} "
                         f"is a score-SDE recipe (use an SDE or ODE sampler)")
    return recipe.n_levels + 1


def _annealed(recipe, model, x, nfe, generator):
    """NCSN's annealed Langevin: n_steps_each = (nfe - 1) // L moves per level and the last Tweedie step."""
    ncsn = dataclasses.replace(recipe, n_steps_each=(nfe - 1) // recipe.n_levels)
    return annealed_langevin(model, x, ncsn.sigmas().to(x), eps=ncsn.step_size(),
                             n_steps_each=ncsn.n_steps_each, generator=generator)


SAMPLERS = {
    "default": Sampler(_default, lambda recipe: 1),  # sampling.sample: UniPC-bh2, the library's default
    "euler_maruyama": _on_grid(samplers.euler_maruyama, dpm_solver.time_uniform_grid),
    "reverse_diffusion_predictor": _on_grid(samplers.reverse_diffusion_predictor, dpm_solver.time_uniform_grid),
    "predictor_corrector": _on_grid(samplers.predictor_corrector, dpm_solver.time_uniform_grid, 2),
    "euler_ode": _on_grid(samplers.euler_ode, dpm_solver.logsnr_grid),
    "heun_ode": _on_grid(samplers.heun_ode, dpm_solver.logsnr_grid, 2),
    "ddim": _on_grid(samplers.ddim, dpm_solver.time_uniform_grid),
    "dpm_solver_1": _on_grid(dpm_solver.dpm_solver_1, dpm_solver.logsnr_grid),
    "dpm_solver_2": _on_grid(dpm_solver.dpm_solver_2, dpm_solver.logsnr_grid, 2),
    "dpm_solver_3": _on_grid(dpm_solver.dpm_solver_3, dpm_solver.logsnr_grid, 3),
    "dpm_solver_singlestep": Sampler(_singlestep, lambda recipe: 1),  # DPM-Solver-fast's plan of exactly nfe
    "dpm_solver_pp_2m": _on_grid(dpm_solver.dpm_solver_pp_2m, dpm_solver.logsnr_grid),
    "dpm_solver_pp_3m": _on_grid(multistep.dpm_solver_pp_3m, dpm_solver.logsnr_grid),
    "unipc_3": _on_grid(multistep.unipc_3, dpm_solver.logsnr_grid),
    "ode_rk45": Sampler(_rk45, lambda recipe: 1, lambda recipe, nfe: None),
    "annealed_langevin": Sampler(_annealed, _annealed_min_nfe,
                                 lambda recipe, nfe: (nfe - 1) // recipe.n_levels * recipe.n_levels + 1),
}


def _check_sampler(name: str, recipe, nfe: int) -> Sampler:
    sampler = SAMPLERS[name]
    low = sampler.min_nfe(recipe)
    if nfe < low:
        raise ValueError(f"--nfe {nfe} is too few for --sampler {name} with recipe {recipe.name}: it needs at least {low}")
    return sampler


def fast_cuda(device: torch.device) -> None:
    """TF32 matrix products and cuDNN's autotuner, on CUDA only."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


# -- sample and evaluate -------------------------------------------------------------------------
def _model(args, cli, device):
    """(recipe, model) of the CHECKPOINT argument, the recipe from --recipe or from the file."""
    try:
        saved = runs.read_model_file(args.checkpoint)
    except runs.ModelFileError as err:
        raise ValueError(f"checkpoint {args.checkpoint}: {err}") from None
    name = saved[0]
    if args.recipe is not None and name is not None and name != args.recipe:
        raise ValueError(f"--recipe {args.recipe} does not match checkpoint {args.checkpoint}, made by recipe {name!r}")
    if args.recipe is None and name is None:
        raise ValueError(f"checkpoint {args.checkpoint} does not say which recipe made it; pass --recipe")
    if args.recipe is None and name not in cli.RECIPES:
        raise ValueError(f"checkpoint {args.checkpoint} was made by recipe {name!r}, which this course_lib does "
                         f"not have (it has {', '.join(cli.RECIPES)})")
    recipe = cli.RECIPES[args.recipe or name]
    try:
        model = runs.load_model(recipe, args.checkpoint, device=device, saved=saved)
    except runs.ModelFileError as err:
        raise ValueError(f"checkpoint {args.checkpoint}: {err}") from None
    if args.compile:
        model.compile()
    return recipe, model


def _draw(args, recipe, model, n, device):
    sampler = _check_sampler(args.sampler, recipe, args.nfe)
    start = time.perf_counter()
    x = runs.generate(recipe, model, sampler.run, n, args.nfe, batch_size=args.batch_size, seed=args.seed,
                      device=device)
    seconds = time.perf_counter() - start
    spent = sampler.spent(recipe, args.nfe)
    nfe = "adaptive NFE (rtol = atol = 1e-5)" if spent is None else f"{spent} NFE"
    print(f"{n} samples of {recipe.name} by {args.sampler} at {nfe} in {seconds:.1f} s "
          f"({n / seconds:.1f} images/s on {device})")
    return x, nfe


def sample_command(args, cli) -> int:
    device = get_device(args.device)
    fast_cuda(device)
    recipe, model = _model(args, cli, device)
    x, _ = _draw(args, recipe, model, args.n, device)
    out = Path(args.out)
    grid = runs.save_grid(x[:args.grid], out.with_suffix(".png"), nrow=args.nrow)
    npz = runs.save_npz(x, out.with_suffix(".npz"), recipe=recipe.name, sampler=args.sampler, nfe=args.nfe,
                        seed=args.seed)
    print(f"wrote {grid} (the first {min(args.grid, args.n)}) and {npz} (all {args.n}, uint8 NHWC)")
    return 0


CLASSIFIER = ClassifierConfig()  # the MNIST / CIFAR-10 feature extractor (its channels and steps set per run)


def _features(recipe, train, test, args, device):
    """(feature function, its description) of the classifier for the recipe's data set."""
    from . import digits_classifier, image_features

    if recipe.name.startswith("digits"):
        model = digits_classifier.default_digits_classifier(device)
        what = "the digits classifier (64 features)"
    else:
        config = dataclasses.replace(CLASSIFIER, in_channels=recipe.unet.in_channels, steps=args.classifier_steps)
        path = Path(args.data_root) / "classifiers" / f"{recipe.name.split('-')[0]}-{config.steps}.pt"
        model = image_features.load_or_train(config, train, path, device=device)
        what = f"a classifier trained on its training split ({config.feature_dim} features, cached at {path})"
    accuracy = image_features.accuracy(model, test)
    return image_features.feature_fn(model), f"{what}, test accuracy {100 * accuracy:.1f} %"


def evaluate_command(args, cli) -> int:
    from . import image_features

    device = get_device(args.device)
    fast_cuda(device)
    recipe, model = _model(args, cli, device)
    test = cli.load_split(recipe, False, args.data_root, args.download, device)
    train = cli.load_split(recipe, True, args.data_root, args.download, device)
    n = args.n or len(test)
    if n > len(train):
        raise ValueError(f"--n {n} exceeds the {len(train)} training images that the data's own value needs")
    x, nfe = _draw(args, recipe, model, n, device)
    features, what = _features(recipe, train, test, args, device)
    report = image_features.frechet_report(x.to(device), test.images, train.images, features,
                                           generator=torch.Generator().manual_seed(args.seed))
    print(f"Frechet distance in the features of {what}:\n"
          f"  {n} samples ({args.sampler}, {nfe}) to the {report['n_test']} test images: {report['fd']:.3f}\n"
          f"  {n} training images to the same test images (the data's own value): {report['fd_data']:.3f}")
    if args.json:
        record = {"recipe": recipe.name, "sampler": args.sampler, "nfe": args.nfe, **report}
        Path(args.json).write_text(json.dumps(record) + "\n")
    return 0


# -- the parsers ---------------------------------------------------------------------------------
def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def sample_commands(sub, cli) -> None:
    """Add sample and evaluate to the subparsers of `cli.parser()`."""
    recipe_names = sorted(cli.RECIPES)
    for name, what in (("sample", "draw images from a checkpoint to a PNG grid and an .npz"),
                       ("evaluate", "Frechet distance of a checkpoint's samples to the test set")):
        c = sub.add_parser(name, help=what)
        c.add_argument("checkpoint", help="a weights file, a checkpoint or a run folder")
        c.add_argument("--recipe", choices=recipe_names, default=None, help="default: the one that made the file")
        c.add_argument("--sampler", choices=sorted(SAMPLERS), default="default",
                       help="a sampler of the library by its function's name (default: sampling.sample)")
        c.add_argument("--nfe", type=positive, default=20, help="network evaluations per image (20)")
        c.add_argument("--batch-size", type=positive, default=500, help="images per batch (500)")
        c.add_argument("--seed", type=int, default=0, help="seed of the prior draws (0)")
        c.add_argument("--compile", action="store_true", help="torch.compile the model first")
        if name == "sample":
            c.add_argument("--n", type=positive, default=64, help="how many images (64)")
            c.add_argument("--out", default="samples", help="writes OUT.png and OUT.npz (default samples)")
            c.add_argument("--grid", type=positive, default=64, help="images in the PNG grid (64)")
            c.add_argument("--nrow", type=positive, default=8, help="images per row of the grid (8)")
            c.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
            c.set_defaults(run=lambda args: sample_command(args, cli))
        else:
            c.add_argument("--n", type=positive, default=None, help="samples (default: the test set's size)")
            c.add_argument("--classifier-steps", type=positive, default=2000,
                           help="training steps of the MNIST / CIFAR-10 feature classifier (2000)")
            c.add_argument("--json", default=None, help="also write the numbers to this .json file")
            data_flags(c)
            c.set_defaults(run=lambda args: evaluate_command(args, cli))


def data_flags(p) -> None:
    """--device, --data-root and --download."""
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available; "
                                                  "under torchrun each rank's GPU)")
    p.add_argument("--data-root", default="data", help="folder of the data sets (MNIST, CIFAR-10) and classifiers")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download a missing data set through torchvision (default on)")
