"""Training checkpoints of `train.train`: written atomically, read with weights_only=True.

A checkpoint holds the model, its EMA copy, the optimizer, the step, the loss history, the
config and every random state the run draws from: the global torch RNG of each rank (dropout),
the data generator (the order of the examples) and the noise generator of each shard
(`distributed`). Resuming from it continues the saved run: on the CPU bit for bit, at any world
size whose number divides the run's shards; at another world size the shards are re-drawn from
fresh, seeded streams (the same distribution, another draw), with a warning.

Format 2 adds to format 1 (no "checkpoint_format" key) the shards, the world size, every rank's
RNG and `meta`, a dict of plain values the caller chooses (the recipe that made the run);
format-1 files read as one shard of one process.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import torch

from . import distributed

CHECKPOINT_FORMAT = 2

# fields that leave the sequence of parameters unchanged: a resumed run may change them freely
BOOKKEEPING_FIELDS = ("steps", "checkpoint_every", "checkpoint_dir", "log_every")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of a newer format, or does not fit the run."""


def _global_rng() -> dict:
    states = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def gather_rng(state) -> dict:
    """Every rank's random states, gathered on every rank: the `rng` entry of a checkpoint
    (format 1's keys for one process and one shard, plus "loss_shards" and "ranks" otherwise)."""
    local = {"global": _global_rng(), "loss": {k: g.get_state() for k, g in state.loss_generators.items()}}
    ranks = distributed.all_gather(local)
    shards = {k: s for r in ranks for k, s in r["loss"].items()}
    rng = {**ranks[0]["global"], "data": state.data_generator.get_state(), "loss": shards[0]}
    if len(shards) > 1:
        rng["loss_shards"] = [shards[k] for k in range(len(shards))]
    if len(ranks) > 1:
        rng["ranks"] = [r["global"] for r in ranks]
    return rng


def save_checkpoint(path: str | Path, state, config, *, rng: dict | None = None, meta: dict | None = None,
                    world_size: int = 1) -> Path:
    """torch.save of {model, ema, optimizer, step, rng, loss_history, config, shards, world_size,
    meta}: tensors and plain containers only, so `torch.load(..., weights_only=True)` reads it.
    `rng` defaults to `gather_rng(state)` (a collective: call it on every rank). The file is
    written under a temporary name in the same folder and renamed (`os.replace`, atomic), so an
    interrupted write never leaves a corrupt checkpoint under `path`."""
    path = Path(path)
    rng = rng if rng is not None else gather_rng(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = {
        "checkpoint_format": CHECKPOINT_FORMAT,
        "model": state.model.state_dict(),
        "ema": None if state.ema_model is None else state.ema_model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "step": state.step,
        "rng": rng,
        "loss_history": list(state.loss_history),
        "config": dataclasses.asdict(config),
        "shards": state.shards,
        "world_size": world_size,
        "meta": dict(meta or {}),
    }
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: remove the partial file, keep the error
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at `path` as a dict (weights_only loading, on the CPU). CheckpointError,
    naming the file, when it is missing, unreadable, not a training checkpoint, or newer."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or not a torch file
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__})") from err
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "step", "config"} <= ckpt.keys():
        raise CheckpointError(f"{path} is not a training checkpoint of course_lib.train (a weights file?)")
    version = ckpt.get("checkpoint_format", 1)
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {version!r}; this course_lib reads formats "
                              f"1 to {CHECKPOINT_FORMAT} (a newer course_lib wrote it: update course_lib)")
    return ckpt


def check_same_trajectory(saved: dict, config) -> None:
    """ValueError naming the first field, other than steps and bookkeeping, where the checkpoint's
    config and `config` differ: resuming with it would not continue the saved run."""
    for f in dataclasses.fields(config):
        if f.name in BOOKKEEPING_FIELDS:
            continue
        if f.name not in saved or saved[f.name] != getattr(config, f.name):
            raise ValueError(f"config.{f.name}={getattr(config, f.name)!r} differs from the checkpoint's "
                             f"{saved.get(f.name)!r}; resuming with it would not continue the saved run "
                             f"(only {', '.join(BOOKKEEPING_FIELDS)} may change)")


def load_checkpoint(path: str | Path, state, config=None):
    """Restore a `save_checkpoint` file into `state` (in place) with weights_only loading. With
    `config`, first check that it continues the saved run: a ValueError names any field other than
    steps, checkpoint_every, checkpoint_dir and log_every that differs from the saved config."""
    return restore(read_checkpoint(path), state, config)


def restore(ckpt: dict, state, config=None):
    """`load_checkpoint` from a checkpoint already read (`read_checkpoint`)."""
    if config is not None:
        check_same_trajectory(ckpt["config"], config)
    state.model.load_state_dict(ckpt["model"])
    if (ckpt["ema"] is None) != (state.ema_model is None):
        raise ValueError("the checkpoint's EMA model and config.ema_decay disagree (one is None)")
    if state.ema_model is not None:
        state.ema_model.load_state_dict(ckpt["ema"])
    _restore_optimizer(state.optimizer, ckpt["optimizer"])
    state.step, state.loss_history = int(ckpt["step"]), list(ckpt["loss_history"])
    _restore_rng(ckpt, state)
    return state


def _restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """load_state_dict, keeping this optimizer's implementation (fused / foreach: a GPU run's
    checkpoint resumes on the CPU and back) and putting each `step` where that implementation
    expects it."""
    own = [{k: g.get(k) for k in ("fused", "foreach", "capturable")} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, kept in zip(optimizer.param_groups, own):
        group.update(kept)
        on_device = bool(group.get("fused") or group.get("capturable"))
        for p in group["params"]:
            entry = optimizer.state.get(p, {})
            if torch.is_tensor(entry.get("step")):
                entry["step"] = entry["step"].to(p.device if on_device else "cpu", torch.float32)


def _set_generator(generator: torch.Generator, saved: torch.Tensor, fresh_seed: int, what: str) -> None:
    try:
        generator.set_state(saved)
    except RuntimeError:  # a CUDA generator's state into a CPU one, or back
        warnings.warn(f"the checkpoint's {what} comes from another device type; the run continues "
                      f"with a fresh seeded stream", stacklevel=3)
        generator.manual_seed(fresh_seed)


def _restore_rng(ckpt: dict, state) -> None:
    rng, dist = ckpt["rng"], distributed.current()
    if ckpt.get("world_size", 1) == dist.world_size:
        own = rng["ranks"][dist.rank] if dist.enabled else rng
        torch.set_rng_state(own["torch_cpu"])
        if "torch_cuda" in own and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(own["torch_cuda"])
    else:  # another world size: per-rank streams derived from the seed and the step
        torch.manual_seed(distributed.rank_seed(ckpt["config"]["seed"], "global", state.step, dist.rank))
    state.data_generator.set_state(rng["data"])
    if ckpt.get("shards", 1) != state.shards:
        return  # re-sharded: the shards' generators were seeded fresh (`train`)
    saved = rng.get("loss_shards", [rng["loss"]])
    seed = ckpt["config"]["seed"]
    for k, generator in state.loss_generators.items():
        _set_generator(generator, saved[k], distributed.shard_seed(seed, k, state.step),
                       f"noise generator of shard {k}")
