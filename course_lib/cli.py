"""The course's command line: the only place where names typed on a command line are mapped to
the library's objects.

    python -m course_lib.cli weights digits-ncsn     # train a recipe and write its shipped weights
    python -m course_lib.cli weights digits-vp --steps 2000 --out /tmp/quick.pt
    python -m course_lib.cli weights digits-vp --checkpoint-dir ckpt   # resumable: add --resume ckpt/step_0005000.pt

    python -m course_lib.cli train mnist-vp          # train on this machine's GPU; run it again to resume
    torchrun --standalone --nproc-per-node=8 -m course_lib.cli train cifar10-vp   # 8 GPUs
    python -m course_lib.cli sample runs/mnist-vp --sampler dpm_solver_pp_2m --nfe 20 --n 64
    python -m course_lib.cli evaluate runs/mnist-vp --n 10000

    python -m course_lib.cli student --out student   # the student edition of every chapter
    python -m course_lib.cli colab --out colab       # the Colab edition of every chapter
    python -m course_lib.cli grade alice.ipynb bob.ipynb --report grades.csv
    python -m course_lib.cli book --no-solutions --executed _build/jupyter_execute

`weights` trains the named recipe (`course_lib.recipes`) from its fixed seed on its data set (the
training split of scikit-learn's digits for the digits recipes, MNIST's training set through
torchvision for the MNIST ones) and writes the EMA weights to course_lib/weights/<name>.pt (or
--out). `train` runs a recipe in a run folder (`course_lib.runs`): it logs the loss, draws sample
grids, keeps the last checkpoints and resumes from the latest one, at the same step and with the
same data order and random state, after Ctrl-C, a SIGTERM or a lost runtime; under torchrun every
process runs it (`course_lib.distributed`). `sample` draws images from a weights file, a
checkpoint or a run folder with any sampler of `SAMPLERS` at a chosen NFE, to a PNG grid and an
.npz; `evaluate` gives the classifier-feature Frechet distance of samples to the test set beside
the data's own value (`course_lib.image_features`). The editions, the grader and the book without
solutions are `course_lib.editions`; see the instructors' page of the book. Bad arguments get a
message naming the flag, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from . import recipes
from .runtime import get_device

RECIPES = {r.name: r for r in recipes.ALL}


def _training_images(recipe, data_root: str, device):
    """The training images of a recipe's data set: (N, C, H, W) in [-1, 1]."""
    return load_split(recipe, True, data_root, True, device).images


# the data set of a recipe is named by its name's first part: digits-vp, mnist-ncsn, cifar10-vp
DATA_SIZES = {"mnist": "about 12 MB", "cifar10": "about 170 MB"}


def load_split(recipe, train: bool, data_root: str, download: bool, device):
    """The training (or test) split of a recipe's data set, an ImageData on `device`; a missing
    data set becomes a ValueError naming --data-root and saying how to get it."""
    from . import datasets
    from .digits_classifier import digits_split

    kind = recipe.name.split("-")[0]
    if kind == "digits":
        return digits_split(device=device)[0 if train else 1]
    loader = {"mnist": datasets.load_mnist, "cifar10": datasets.load_cifar10}[kind]
    try:
        return loader(data_root, train=train, download=download, device=device)
    except datasets.DatasetUnavailable as err:
        raise ValueError(
            f"--data-root {data_root}: the {kind} {'training' if train else 'test'} split is not available "
            f"({err}). To get it: install torchvision (the build matching your torch) and run the command "
            f"where the network is reachable, without --no-download: it downloads {kind} ({DATA_SIZES[kind]}) "
            f"into --data-root; or copy torchvision's {kind} files there") from None


def weights_command(args) -> int:
    recipe = RECIPES[args.recipe]
    if args.steps is not None and args.steps != recipe.train.steps and args.out is None:
        raise ValueError(f"--steps {args.steps} is not {recipe.name}'s {recipe.train.steps}: give --out, so the "
                         f"shipped {recipes.weights_path(recipe).name} is not overwritten by other weights")
    changes = {} if args.steps is None else {"steps": args.steps}
    if args.checkpoint_dir is not None:  # bookkeeping only: the trajectory is the same
        changes.update(checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every)
    config = dataclasses.replace(recipe.train, **changes)
    device = get_device(args.device)
    images = _training_images(recipe, args.data_root, device)
    print(f"training {recipe.name} for {config.steps} steps on {len(images)} images ({device})")
    start = time.perf_counter()
    state = recipes.train_recipe(recipe, images, config=config, device=device, resume=args.resume)
    seconds = time.perf_counter() - start
    model = state.ema_model if state.ema_model is not None else state.model
    tail = state.loss_history[-500:]
    # the file's fingerprint records the steps it was trained for: another count is another recipe
    trained = recipes.replace_train(recipe, steps=config.steps)
    path = recipes.save_weights(trained, model, args.out, steps=state.step, seconds=seconds,
                                final_loss=sum(tail) / len(tail), device=str(device))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) after {seconds / 60:.1f} min; "
          f"mean loss of the last {len(tail)} steps {sum(tail) / len(tail):.4f}")
    if trained != recipe:
        print(f"note: {config.steps} steps, not the recipe's {recipe.train.steps}: load it with "
              f"recipes.load_weights(recipes.replace_train(recipes.<RECIPE>, steps={config.steps}), path)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m course_lib.cli", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("weights", help="train a recipe and write its weights")
    w.add_argument("recipe", choices=sorted(RECIPES), help="which recipe")
    w.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    w.add_argument("--out", default=None, help="where to write (default course_lib/weights/<name>.pt)")
    w.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    w.add_argument("--data-root", default="data", help="folder for downloaded data sets (MNIST)")
    w.add_argument("--checkpoint-dir", default=None, help="write resumable checkpoints into this folder")
    w.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (default 1000)")
    w.add_argument("--resume", default=None, help="continue from a checkpoint of --checkpoint-dir")
    w.set_defaults(run=weights_command)
    from .cli_runs import run_commands  # train, sample, evaluate

    run_commands(sub, sys.modules[__name__])
    _edition_commands(sub)
    return p


def edition_command(args) -> int:
    from .editions import colab, student
    from .editions.project import Book

    book = Book.at(args.root)
    transform = student.student_notebook if args.command == "student" else colab.colab_notebook
    for path in student.write_edition(transform, book, args.out):
        print(path)
    return 0


def grade_command(args) -> int:
    from .editions import grading
    from .editions.project import Book

    book = Book.at(args.root)
    reports = [grading.grade(path, book, args.chapter, timeout=args.timeout, profile=args.profile)
               for path in args.notebooks]
    print("\n".join(grading.render(r) for r in reports))
    if args.report:
        print(f"wrote {grading.write_reports(reports, args.report)}")
    return 0


def book_command(args) -> int:
    from .editions import nosolutions
    from .editions.project import Book

    html = nosolutions.build(Book.at(args.root), args.out, executed=args.executed)
    print(f"The book without solutions is in {html}/index.html")
    return 0


def _edition_commands(sub) -> None:
    for name, what in (("student", "the student edition"), ("colab", "the Colab edition")):
        e = sub.add_parser(name, help=f"write {what} of every chapter")
        e.add_argument("--out", default=name, help=f"output folder (default {name}/)")
        e.add_argument("--root", default=None, help="the book's folder (default: here)")
        e.add_argument("--book-dir", default=None, help=argparse.SUPPRESS)  # student_version's
        e.set_defaults(run=edition_command)
    g = sub.add_parser("grade", help="run students' notebooks in a kernel and grade their exercises")
    g.add_argument("notebooks", nargs="+", help="the completed student notebooks")
    g.add_argument("--report", default=None, help="also write the grades to this .csv or .json file")
    g.add_argument("--timeout", type=int, default=120, help="seconds per cell before it is interrupted (default 120)")
    g.add_argument("--chapter", default=None, help="the chapter notebook (default: from the submission)")
    g.add_argument("--profile", default="ci", choices=["ci", "cpu", "gpu"], help="COURSE_PROFILE for the run")
    g.add_argument("--root", default=None, help="the book's folder (default: here)")
    g.set_defaults(run=grade_command)
    b = sub.add_parser("book", help="build the HTML book without solutions")
    b.add_argument("--no-solutions", action="store_true", required=True, help="leave every solution out")
    b.add_argument("--executed", default=None,
                   help="executed notebooks of a previous build (its jupyter_execute/); default: execute now")
    b.add_argument("--out", default="_build/no-solutions", help="build folder (default _build/no-solutions)")
    b.add_argument("--root", default=None, help="the book's folder (default: here)")
    b.set_defaults(run=book_command)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "steps", None) is not None and args.steps < 1:
        parser().error("--steps must be a positive integer")
    if getattr(args, "checkpoint_every", 1) < 1:
        parser().error("--checkpoint-every must be a positive integer")
    if getattr(args, "timeout", 1) < 1:
        parser().error("--timeout must be a positive number of seconds")
    if getattr(args, "book_dir", None):  # `student_version book`: the book is the folder above
        args.root = str(Path(args.book_dir).resolve().parent)
    try:
        return args.run(args)
    except (ValueError, RuntimeError) as err:  # DatasetUnavailable, a bad device, ...
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
