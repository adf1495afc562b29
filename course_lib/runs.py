"""A recipe's training run on disk, and what the command line does with its files.

A run folder (`python -m course_lib.cli train <recipe> --run-dir runs/<recipe>`) holds

    checkpoints/step_0001000.pt   resumable checkpoints of `train.train` (the last few are kept)
    log.jsonl                     one line per log point: step, loss, images/s, seconds
    samples/step_0002000.png      sample grids of the EMA model, drawn while training
    weights.pt                    the EMA weights at the end (`recipes.save_weights`)

Every checkpoint records the recipe that made it (`identity`), so a file from another recipe,
or from a recipe whose settings have changed since, is refused with a message naming it
(`ModelFileError`), never a traceback from `load_state_dict`. Sampling (`generate`) runs in
batches under `torch.inference_mode`; `save_grid` and `save_npz` write what it drew.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed, recipes
from .checkpoints import CheckpointError, read_checkpoint


class ModelFileError(ValueError):
    """A weights file or checkpoint that is missing, unreadable, or made by another recipe."""


def identity(recipe: recipes.Recipe) -> dict:
    """What a checkpoint records of the recipe that made it (the `meta` of `train.train`)."""
    return {"recipe": recipe.name, "fingerprint": recipes.fingerprint(recipe)}


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint of the highest step in `folder` (step_<7 digits>.pt), or None."""
    found = sorted(Path(folder).glob("step_*.pt")) if Path(folder).is_dir() else []
    return found[-1] if found else None


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    """Delete all but the `keep` latest checkpoints of `folder`."""
    for path in sorted(Path(folder).glob("step_*.pt"))[:-keep]:
        path.unlink(missing_ok=True)


def resolve(path: str | Path) -> Path:
    """A run folder stands for its weights.pt, else its latest checkpoint; a file for itself."""
    path = Path(path)
    if path.is_dir():
        found = path / "weights.pt" if (path / "weights.pt").is_file() else latest_checkpoint(path / "checkpoints")
        if found is None:
            raise ModelFileError(f"{path} holds neither weights.pt nor checkpoints/step_*.pt")
        return found
    return path


def read_model_file(path: str | Path) -> tuple[str | None, str | None, dict]:
    """(recipe name, fingerprint, the model's state_dict) of a weights file or a training
    checkpoint (its EMA model when it has one), loaded with weights_only=True."""
    path = resolve(path)
    if not path.is_file():
        raise ModelFileError(f"no weights file or checkpoint at {path}")
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as err:
        if "not a training checkpoint" not in str(err):
            raise ModelFileError(str(err)) from err
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or saved.get("format") != recipes.FORMAT or "state_dict" not in saved:
            raise ModelFileError(f"{path} is neither a weights file (format {recipes.FORMAT}) nor a training "
                                 f"checkpoint") from err
        return saved.get("recipe"), saved.get("fingerprint"), saved["state_dict"]
    meta = ckpt.get("meta", {})
    return meta.get("recipe"), meta.get("fingerprint"), ckpt["ema"] if ckpt["ema"] is not None else ckpt["model"]


def check_identity(recipe: recipes.Recipe, name: str | None, fingerprint: str | None, path) -> None:
    """ModelFileError unless the file at `path` was made by `recipe` as it is now."""
    if name is None:
        return  # a checkpoint of train.train without a recipe: load_model's shape check decides
    if name != recipe.name:
        raise ModelFileError(f"{path} was made by recipe {name!r}, not {recipe.name!r}")
    if fingerprint != recipes.fingerprint(recipe):
        raise ModelFileError(f"{path} was made by recipe {name!r} with other settings than {name!r} has now "
                             f"(course_lib changed since): retrain it")


def load_model(recipe: recipes.Recipe, path: str | Path, *, device=None, saved=None) -> nn.Module:
    """The recipe's model with the weights of a weights file, a checkpoint or a run folder, in
    eval mode on `device`, without gradients; ModelFileError when the file does not fit.
    `saved`: what `read_model_file(path)` returned, when it was read already."""
    name, fingerprint, state = saved if saved is not None else read_model_file(path)
    check_identity(recipe, name, fingerprint, path)
    model = recipe.model()
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors
        raise ModelFileError(f"{path}: its tensors do not fit recipe {recipe.name!r}'s network") from err
    return model.to(device).eval().requires_grad_(False)


# -- sampling ------------------------------------------------------------------------------------
@torch.inference_mode()
def generate(recipe: recipes.Recipe, model: nn.Module, run, n: int, nfe: int, *, batch_size: int = 500,
             seed: int = 0, device=None) -> Tensor:
    """n images (n, C, H, W) in [-1, 1] (clamped), float32 on the CPU, drawn in batches of
    `batch_size` by `run(recipe, model, x_T, nfe, generator) -> x_0` from prior draws x_T of the
    recipe's SDE; batch b uses a generator seeded by `distributed.rank_seed(seed, b)`, so the same
    seed and batch size give the same images."""
    for name, value in (("n", n), ("batch_size", batch_size), ("nfe", nfe)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    c, size = recipe.unet.in_channels, recipe.unet.image_size
    sde, out = recipe.sde(), []
    for b, start in enumerate(range(0, n, batch_size)):
        generator = torch.Generator(device=device).manual_seed(distributed.rank_seed(seed, b))
        x = sde.prior_sampling((min(batch_size, n - start), c, size, size), generator=generator, device=device)
        out.append(run(recipe, model, x, nfe, generator).float().clamp(-1.0, 1.0).cpu())
    return torch.cat(out)


def save_grid(images: Tensor, path: str | Path, *, nrow: int = 8, scale: int = 4) -> Path:
    """A PNG of images (N, C, H, W) in [-1, 1] tiled nrow to a row, each pixel `scale` pixels wide."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plotting import image_grid

    n, _, h, w = images.shape
    ncol = min(nrow, n)
    height, width = (-(-n // ncol)) * (h + 1) + 1, ncol * (w + 1) + 1
    fig = plt.figure(figsize=(width * scale / 100, height * scale / 100), dpi=100)
    image_grid(fig.add_axes((0, 0, 1, 1)), images, nrow=nrow)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def to_uint8(images: Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] as uint8 pixels (N, H, W, C), the layout of image files."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def from_uint8(pixels: np.ndarray) -> Tensor:
    """The inverse of `to_uint8` up to rounding: (N, H, W, C) uint8 -> (N, C, H, W) in [-1, 1]."""
    return torch.from_numpy(np.asarray(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def save_npz(images: Tensor, path: str | Path, **info) -> Path:
    """`images` as uint8 (N, H, W, C) under the key "images", with `info` (recipe, sampler, nfe,
    seed) beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=to_uint8(images), **{k: np.asarray(v) for k, v in info.items()})
    return path


# -- the training run's log --------------------------------------------------------------------
class RunLog:
    """`train.train`'s callback for a run folder, acting on rank 0 only: a log.jsonl line and a
    printed line at each log point, a sample grid every `sample_every` steps (`sample(model, step)`
    with the EMA model in eval mode), and pruning of old checkpoints down to the `keep` latest.
    `start_step`: the step the run starts or resumes from."""

    def __init__(self, run_dir: Path, batch_size: int, *, start_step: int = 0, sample=None, sample_every: int = 0,
                 keep: int = 2):
        self.run_dir, self.batch_size, self.sample = Path(run_dir), batch_size, sample
        self.sample_every, self.keep = sample_every, keep
        self.last_step, self.last_time = start_step, time.perf_counter()
        self.sampled = start_step // sample_every if sample_every else 0

    def __call__(self, state) -> None:
        if not distributed.current().is_main:
            return
        steps = state.step - self.last_step
        rate = steps * self.batch_size / max(time.perf_counter() - self.last_time, 1e-9)
        loss = sum(state.loss_history[-steps:]) / steps if steps else float("nan")
        with open(self.run_dir / "log.jsonl", "a") as log:
            log.write(json.dumps({"step": state.step, "loss": loss, "images_per_second": rate}) + "\n")
        print(f"step {state.step:>7d}  loss {loss:.4f}  {rate:,.0f} images/s", flush=True)
        if self.sample is not None and self.sample_every and state.step // self.sample_every > self.sampled:
            self.sampled = state.step // self.sample_every
            model = state.ema_model if state.ema_model is not None else state.model
            was_training = model.training
            self.sample(model.eval(), state.step)
            model.train(was_training)
        if state.checkpoint_path is not None:
            prune_checkpoints(state.checkpoint_path.parent, self.keep)
        self.last_step, self.last_time = state.step, time.perf_counter()
