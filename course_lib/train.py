"""The one training loop of the course: AdamW, gradient clipping, an EMA of the weights, bf16
autocast on CUDA, a progress bar, a loss history, periodic checkpoints and exact resume; on a GPU
the fast path (`Speed`: torch.compile, fused AdamW, channels-last) and data parallelism over the
processes of a torchrun job (`distributed`).

`loss_fn(model, batch, generator) -> 0-d tensor` holds everything chapter-specific (which loss,
which SDE, which parameterization); `data` is a tensor of training examples (batches drawn
with replacement by a seeded torch.Generator; keep it on the GPU for MNIST- and CIFAR-sized
sets, so no step waits for a data loader) or a sampler `data(batch_size, generator)`.
Checkpoints are `checkpoints`'s; `save_checkpoint` and `load_checkpoint` are re-exported here.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import distributed
from .checkpoints import check_same_trajectory, gather_rng, load_checkpoint, read_checkpoint, restore, save_checkpoint
from .runtime import get_device

__all__ = ["TrainConfig", "Speed", "TrainState", "train", "ema_update", "save_checkpoint", "load_checkpoint"]

LossFn = Callable[[nn.Module, Tensor, torch.Generator], Tensor]
_DDP_ARGS = inspect.signature(DistributedDataParallel.__init__).parameters


def _is_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class TrainConfig:
    """Settings of `train`; chapters take `steps` from `runtime.get_profile().train_steps`."""

    steps: int = 1_000                    # total optimizer steps (a resumed run continues up to this)
    lr: float = 2e-4                      # AdamW learning rate
    batch_size: int = 256                 # examples per step, over all processes (the global batch)
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




@dataclass(frozen=True)
class Speed:
    """How a run uses its hardware. None of it changes the examples, noise or updates of a step,
    only their floating-point round-off, so a checkpoint resumes under any of these settings."""

    compile: bool = False              # torch.compile the model (worth it on a GPU; a CPU compiles for minutes)
    compile_backend: str = "inductor"  # torch.compile's backend ("eager" only traces: what the CPU tests use)
    channels_last: bool = False        # NHWC memory format for the weights and each image batch
    fused_adamw: bool | None = None    # AdamW's fused kernel; None: on CUDA only

    def __post_init__(self):
        for name in ("compile", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.fused_adamw not in (None, True, False):
            raise ValueError(f"fused_adamw must be True, False or None, got {self.fused_adamw!r}")
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise ValueError(f"compile_backend must name a torch.compile backend, got {self.compile_backend!r}")


@dataclass
class TrainState:
    """What `train` returns: the trained model (unwrapped: its state_dict is the checkpoint's), its
    EMA copy, the optimizer, the step reached, the loss of every step (averaged over the
    processes), the generators (data on the CPU, one for the loss noise of each of this process's
    shards on the device; `loss_generator` is the first), the last checkpoint written, and
    whether a signal ended the run early."""

    model: nn.Module
    ema_model: nn.Module | None
    optimizer: torch.optim.Optimizer
    step: int
    loss_history: list[float] = field(default_factory=list)
    data_generator: torch.Generator | None = None
    loss_generator: torch.Generator | None = None
    checkpoint_path: Path | None = None
    seconds: float = 0.0
    loss_generators: dict[int, torch.Generator] = field(default_factory=dict)
    shards: int = 1
    interrupted: bool = False


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """theta_ema <- decay theta_ema + (1 - decay) theta, in place; buffers are copied."""
    ema_params = [p for p in ema_model.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for b_ema, b in zip(ema_model.buffers(), model.buffers()):
        b_ema.copy_(b)


def _check_data(data) -> None:
    if torch.is_tensor(data):
        if data.ndim < 1 or data.shape[0] < 1:
            raise ValueError(f"data must hold at least one example along dim 0, got shape {tuple(data.shape)}")
    elif not callable(data):
        raise ValueError(f"data must be a tensor (N, *D) or a callable data(batch_size, generator), got {type(data)}")


def _draw_shards(data, state: TrainState, batch_size: int, device, speed: Speed) -> list[Tensor]:
    """This process's shards of the step's global batch (indices with replacement from a data
    tensor, or a sampler's batch), each moved to `device`."""
    parts = [distributed.shard_slice(batch_size, state.shards, k) for k in state.loss_generators]
    if torch.is_tensor(data):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=state.data_generator)
        batches = [data[idx[part].to(data.device)] for part in parts]
    else:
        full = data(batch_size, state.data_generator)
        batches = [full[part] for part in parts]
    batches = [b.to(device, non_blocking=True) for b in batches]
    if speed.channels_last:
        batches = [b.contiguous(memory_format=torch.channels_last) if b.ndim == 4 else b for b in batches]
    return batches


def _init_state(model, config: TrainConfig, device: torch.device, ema_model, speed: Speed,
                dist: distributed.Dist, shards: int, start_step: int) -> TrainState:
    model.to(device)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    if ema_model is None and config.ema_decay is not None:
        ema_model = copy.deepcopy(model)
    if ema_model is not None:
        ema_model.to(device).eval().requires_grad_(False)
    fused = speed.fused_adamw if speed.fused_adamw is not None else device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  **({"fused": True} if fused else {}))
    data_gen = torch.Generator().manual_seed(config.seed)
    loss_gens = {k: torch.Generator(device=device).manual_seed(distributed.shard_seed(config.seed, k, start_step))
                 for k in distributed.rank_shards(shards, dist.world_size, dist.rank)}
    if dist.enabled:  # dropout: each rank its own stream
        torch.manual_seed(distributed.rank_seed(config.seed, "global", start_step, dist.rank))
    return TrainState(model, ema_model, optimizer, 0, [], data_gen, next(iter(loss_gens.values())),
                      loss_generators=loss_gens, shards=shards)


def _prepare(model: nn.Module, device: torch.device, dist: distributed.Dist, speed: Speed) -> nn.Module:
    """The module the loss calls: the model, compiled in place (its state_dict keys unchanged)
    and, in a torchrun job, wrapped in DistributedDataParallel."""
    if speed.compile:
        model.compile(backend=speed.compile_backend)
    if dist.enabled:  # parameters and buffers are broadcast from rank 0 once; buffers are constant
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_ARGS
                   else {"broadcast_buffers": False})  # its older name
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       **no_sync)
    return model


def _step(state: TrainState, net: nn.Module, loss_fn: LossFn, batches: list[Tensor], config: TrainConfig,
          device) -> Tensor:
    """One optimizer step over this process's shards (gradients accumulated, all-reduced once by
    DDP on the last); returns their mean loss, detached (no host sync)."""
    n = len(batches)
    state.optimizer.zero_grad(set_to_none=True)
    total = None
    for i, (batch, generator) in enumerate(zip(batches, state.loss_generators.values())):
        defer = isinstance(net, DistributedDataParallel) and i < n - 1
        with net.no_sync() if defer else contextlib.nullcontext():
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                enabled=config.amp and device.type == "cuda"):
                loss = loss_fn(net, batch, generator)
            (loss if n == 1 else loss / n).backward()
        total = loss.detach().float() if total is None else total + loss.detach().float()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip)
    state.optimizer.step()
    if state.ema_model is not None:
        ema_update(state.ema_model, state.model, config.ema_decay)
    return total if n == 1 else total / n


def train(model: nn.Module, loss_fn: LossFn, data, config: TrainConfig, *, device=None,
          ema_model: nn.Module | None = None, resume: str | Path | None = None, progress: bool = True,
          speed: Speed = Speed(), shards: int | None = None, handle_signals: bool = False,
          meta: dict | None = None, callback: Callable[[TrainState], None] | None = None) -> TrainState:
    """Train `model` for `config.steps` steps of `loss_fn(model, batch, generator)`.

    `data`: a tensor (N, *D) (kept where it is; each batch moves to `device`) or a sampler
    `data(batch_size, generator) -> (B, *D)` driven by a CPU generator. `ema_model`: an existing
    EMA copy to update (default: a deep copy of `model` when `config.ema_decay` is set).
    `device`: where the model and each batch go (default `runtime.get_device()`).
    `resume`: a checkpoint of `save_checkpoint`; the run then continues from its step, and on
    the CPU reproduces an uninterrupted run bit for bit. Its config must match `config` except in
    steps, checkpoint_every, checkpoint_dir and log_every (ValueError naming the field).
    In a torchrun job (`distributed.init` first) every process calls `train` alike; `shards`
    (default: the checkpoint's, else the world size) splits each global batch (`distributed`).
    `speed`: compile, fused AdamW, channels-last. `handle_signals`: SIGINT / SIGTERM end the run at
    its next log point with a checkpoint (when `config.checkpoint_dir` is set) and
    `interrupted=True`. `meta`: plain values stored in every checkpoint. `callback(state)` runs on
    every process at each log point (every `log_every` steps and at checkpoints). Returns the
    `TrainState`.
    """
    _check_data(data)
    if ema_model is not None and config.ema_decay is None:
        raise ValueError("ema_model was given but config.ema_decay is None; set config.ema_decay "
                         "(e.g. 0.999) or leave ema_model out")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable loss_fn(model, batch, generator), got {loss_fn!r}")
    device = torch.device(device) if device is not None else get_device()
    dist = distributed.current()
    ckpt = read_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        check_same_trajectory(ckpt["config"], config)
    saved = None if ckpt is None else int(ckpt.get("shards", 1))
    n_shards = distributed.plan_shards(saved, shards, dist.world_size, config.batch_size)
    start_step = 0 if ckpt is None or n_shards == saved else int(ckpt["step"])  # fresh noise streams from here
    state = _init_state(model, config, device, ema_model, speed, dist, n_shards, start_step)
    if ckpt is not None:
        restore(ckpt, state, config)
    net = _prepare(state.model, device, dist, speed)
    model.train()
    with distributed.StopOnSignal(handle_signals) as stop:
        _loop(state, net, loss_fn, data, config, device, speed, stop, progress, meta, callback)
    return state


def _loop(state, net, loss_fn, data, config, device, speed, stop, progress, meta, callback) -> None:
    dist = distributed.current()
    bar = tqdm(total=config.steps, initial=state.step, disable=not (progress and dist.is_main), desc="training")
    pending: list[Tensor] = []
    start = time.perf_counter()
    while state.step < config.steps:
        batches = _draw_shards(data, state, config.batch_size, device, speed)
        pending.append(_step(state, net, loss_fn, batches, config, device))
        state.step += 1
        at_checkpoint = config.checkpoint_every and (state.step % config.checkpoint_every == 0
                                                     or state.step == config.steps)
        if not (at_checkpoint or len(pending) == config.log_every or state.step == config.steps):
            continue
        state.interrupted = _flush(state, pending, bar, stop.requested)
        if at_checkpoint or (state.interrupted and config.checkpoint_dir is not None):
            state.checkpoint_path = _save(state, config, dist, meta)
        if callback is not None:
            callback(state)
        if state.interrupted:
            break
    bar.close()
    state.seconds = time.perf_counter() - start


def _save(state: TrainState, config: TrainConfig, dist: distributed.Dist, meta) -> Path:
    """Write checkpoint step_<step>.pt from rank 0 (every rank gathers the random states)."""
    path = Path(config.checkpoint_dir) / f"step_{state.step:07d}.pt"
    rng = gather_rng(state)
    if dist.is_main:
        save_checkpoint(path, state, config, rng=rng, meta=meta, world_size=dist.world_size)
    return path


def _flush(state: TrainState, pending: list[Tensor], bar, stop_requested: bool) -> bool:
    """Move the pending losses, averaged over the processes, to the history (one host sync),
    refuse non-finite ones, update the bar; returns whether any process asked to stop."""
    values = torch.stack(pending + [torch.tensor(float(stop_requested), device=pending[0].device)])
    values = distributed.all_reduce_mean(values).tolist()
    losses, stop = values[:-1], values[-1] > 0
    first = state.step - len(pending) + 1
    pending.clear()
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"the loss became {losses[bad[0]]} at step {first + bad[0]}; "
                                 f"lower config.lr or set config.grad_clip")
    state.loss_history.extend(losses)
    bar.update(len(losses))
    bar.set_postfix(loss=f"{sum(losses) / len(losses):.4g}")
    return stop
