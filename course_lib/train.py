"""The one training loop of the course: AdamW, gradient clipping, an EMA of the weights, bf16
autocast on CUDA, a progress bar, a loss history, periodic checkpoints and exact resume.

`loss_fn(model, batch, generator) -> 0-d tensor` holds everything chapter-specific (which loss,
which SDE, which parameterization); `data` is a tensor of training examples (batches drawn
with replacement by a seeded torch.Generator) or a sampler `data(batch_size, generator)`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .runtime import get_device

LossFn = Callable[[nn.Module, Tensor, torch.Generator], Tensor]


def _is_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class TrainConfig:
    """Settings of `train`; chapters take `steps` from `runtime.get_profile().train_steps`."""

    steps: int = 1_000                    # total optimizer steps (a resumed run continues up to this)
    lr: float = 2e-4                      # AdamW learning rate
    batch_size: int = 256                 # examples per step
    grad_clip: float | None = 1.0         # max global gradient norm; None: no clipping
    ema_decay: float | None = 0.999       # decay of the weight EMA; None: no EMA model
    weight_decay: float = 0.0             # AdamW's decoupled weight decay
    checkpoint_every: int = 0             # save every this many steps and at the end; 0: never
    checkpoint_dir: str | None = None     # folder of the checkpoints (needed when checkpoint_every > 0)
    amp: bool = False                     # bf16 autocast of the forward pass, used only on CUDA
    log_every: int = 25                   # steps between progress-bar updates and non-finite checks
    seed: int = 0                         # seeds the data and loss generators

    def __post_init__(self):
        for name, low in (("steps", 1), ("batch_size", 1), ("log_every", 1), ("checkpoint_every", 0), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not _is_positive(self.lr):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.grad_clip is not None and not _is_positive(self.grad_clip):
            raise ValueError(f"grad_clip must be a finite number > 0 or None, got {self.grad_clip!r}")
        if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay must lie in [0, 1) or be None, got {self.ema_decay!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.checkpoint_every > 0 and self.checkpoint_dir is None:
            raise ValueError("checkpoint_dir must be set when checkpoint_every > 0")
        if self.checkpoint_dir is not None:  # a str, so checkpoints hold plain types only
            object.__setattr__(self, "checkpoint_dir", str(self.checkpoint_dir))


@dataclass
class TrainState:
    """What `train` returns: the trained model, its EMA copy, the optimizer, the step reached,
    the loss of every step, the generators (data on the CPU, loss noise on the device) and the
    last checkpoint written."""

    model: nn.Module
    ema_model: nn.Module | None
    optimizer: torch.optim.Optimizer
    step: int
    loss_history: list[float] = field(default_factory=list)
    data_generator: torch.Generator | None = None
    loss_generator: torch.Generator | None = None
    checkpoint_path: Path | None = None
    seconds: float = 0.0


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """theta_ema <- decay theta_ema + (1 - decay) theta, in place; buffers are copied."""
    ema_params = [p for p in ema_model.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for b_ema, b in zip(ema_model.buffers(), model.buffers()):
        b_ema.copy_(b)


def _draw_batch(data, batch_size: int, generator: torch.Generator) -> Tensor:
    """A batch from a data tensor (indices with replacement) or from a sampler."""
    if torch.is_tensor(data):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        return data[idx.to(data.device)]
    return data(batch_size, generator)


def _check_data(data) -> None:
    if torch.is_tensor(data):
        if data.ndim < 1 or data.shape[0] < 1:
            raise ValueError(f"data must hold at least one example along dim 0, got shape {tuple(data.shape)}")
    elif not callable(data):
        raise ValueError(f"data must be a tensor (N, *D) or a callable data(batch_size, generator), got {type(data)}")


def _rng_states(state: TrainState) -> dict:
    states = {"torch_cpu": torch.get_rng_state(), "data": state.data_generator.get_state(),
              "loss": state.loss_generator.get_state()}
    if torch.cuda.is_available():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def save_checkpoint(path: str | Path, state: TrainState, config: TrainConfig) -> Path:
    """torch.save of {model, ema, optimizer, step, rng (torch CPU/CUDA, data and loss
    generators, as uint8 tensors), loss_history, config}: tensors and plain containers only,
    so `torch.load(..., weights_only=True)` reads it. The file is written under a temporary name
    in the same folder and renamed (`os.replace`, atomic), so an interrupted write never leaves a
    corrupt checkpoint under `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _save_to(tmp, state, config)
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: remove the partial file, keep the error
        tmp.unlink(missing_ok=True)
        raise
    return path


def _save_to(file: Path, state: TrainState, config: TrainConfig) -> None:
    torch.save({
        "model": state.model.state_dict(),
        "ema": None if state.ema_model is None else state.ema_model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "step": state.step,
        "rng": _rng_states(state),
        "loss_history": list(state.loss_history),
        "config": dataclasses.asdict(config),
    }, file)


# fields that leave the sequence of parameters unchanged: a resumed run may change them freely
_BOOKKEEPING_FIELDS = ("steps", "checkpoint_every", "checkpoint_dir", "log_every")


def _check_same_trajectory(saved: dict, config: TrainConfig) -> None:
    """ValueError naming the first field, other than steps and bookkeeping, where the checkpoint's
    config and `config` differ: resuming with it would not continue the saved run."""
    for f in dataclasses.fields(config):
        if f.name in _BOOKKEEPING_FIELDS:
            continue
        if f.name not in saved or saved[f.name] != getattr(config, f.name):
            raise ValueError(f"config.{f.name}={getattr(config, f.name)!r} differs from the checkpoint's "
                             f"{saved.get(f.name)!r}; resuming with it would not continue the saved run "
                             f"(only {', '.join(_BOOKKEEPING_FIELDS)} may change)")


def load_checkpoint(path: str | Path, state: TrainState, config: TrainConfig | None = None) -> TrainState:
    """Restore a `save_checkpoint` file into `state` (in place) with weights_only loading. With
    `config`, first check that it continues the saved run: a ValueError names any field other than
    steps, checkpoint_every, checkpoint_dir and log_every that differs from the saved config."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if config is not None:
        _check_same_trajectory(ckpt["config"], config)
    state.model.load_state_dict(ckpt["model"])
    if (ckpt["ema"] is None) != (state.ema_model is None):
        raise ValueError("the checkpoint's EMA model and config.ema_decay disagree (one is None)")
    if state.ema_model is not None:
        state.ema_model.load_state_dict(ckpt["ema"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step, state.loss_history = int(ckpt["step"]), list(ckpt["loss_history"])
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["torch_cuda"])
    state.data_generator.set_state(rng["data"])
    state.loss_generator.set_state(rng["loss"])
    return state


def _init_state(model, config: TrainConfig, device: torch.device, ema_model) -> TrainState:
    model.to(device)
    if ema_model is None and config.ema_decay is not None:
        ema_model = copy.deepcopy(model)
    if ema_model is not None:
        ema_model.to(device).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data_gen = torch.Generator().manual_seed(config.seed)
    loss_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    return TrainState(model, ema_model, optimizer, 0, [], data_gen, loss_gen)


def _step(state: TrainState, loss_fn: LossFn, batch: Tensor, config: TrainConfig, device) -> Tensor:
    """One optimizer step; returns the detached loss (no host sync)."""
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda"):
        loss = loss_fn(state.model, batch, state.loss_generator)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip)
    state.optimizer.step()
    if state.ema_model is not None:
        ema_update(state.ema_model, state.model, config.ema_decay)
    return loss.detach().float()


def train(model: nn.Module, loss_fn: LossFn, data, config: TrainConfig, *, device=None,
          ema_model: nn.Module | None = None, resume: str | Path | None = None,
          progress: bool = True) -> TrainState:
    """Train `model` for `config.steps` steps of `loss_fn(model, batch, generator)`.

    `data`: a tensor (N, *D) (kept where it is; each batch moves to `device`) or a sampler
    `data(batch_size, generator) -> (B, *D)` driven by a CPU generator. `ema_model`: an existing
    EMA copy to update (default: a deep copy of `model` when `config.ema_decay` is set).
    `device`: where the model and each batch go (default `runtime.get_device()`).
    `resume`: a checkpoint of `save_checkpoint`; the run then continues from its step, and on
    the CPU reproduces an uninterrupted run bit for bit. Its config must match `config` except in
    steps, checkpoint_every, checkpoint_dir and log_every (ValueError naming the field). Returns the `TrainState`.
    """
    _check_data(data)
    if ema_model is not None and config.ema_decay is None:
        raise ValueError("ema_model was given but config.ema_decay is None; set config.ema_decay "
                         "(e.g. 0.999) or leave ema_model out")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable loss_fn(model, batch, generator), got {loss_fn!r}")
    device = torch.device(device) if device is not None else get_device()
    state = _init_state(model, config, device, ema_model)
    if resume is not None:
        load_checkpoint(resume, state, config)
    model.train()
    bar = tqdm(total=config.steps, initial=state.step, disable=not progress, desc="training")
    pending: list[Tensor] = []
    start = time.perf_counter()
    while state.step < config.steps:
        batch = _draw_batch(data, config.batch_size, state.data_generator).to(device, non_blocking=True)
        pending.append(_step(state, loss_fn, batch, config, device))
        state.step += 1
        if len(pending) == config.log_every or state.step == config.steps:
            _flush(state, pending, bar)
        if config.checkpoint_every and (state.step % config.checkpoint_every == 0 or state.step == config.steps):
            _flush(state, pending, bar)
            state.checkpoint_path = save_checkpoint(
                Path(config.checkpoint_dir) / f"step_{state.step:07d}.pt", state, config)
    bar.close()
    state.seconds = time.perf_counter() - start
    return state


def _flush(state: TrainState, pending: list[Tensor], bar) -> None:
    """Move the pending losses to the history (one host sync), refuse non-finite ones, update the bar."""
    if not pending:
        return
    losses = torch.stack(pending).tolist()
    first = state.step - len(pending) + 1
    pending.clear()
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"the loss became {losses[bad[0]]} at step {first + bad[0]}; "
                                 f"lower config.lr or set config.grad_clip")
    state.loss_history.extend(losses)
    bar.update(len(losses))
    bar.set_postfix(loss=f"{sum(losses) / len(losses):.4g}")
