"""Data-parallel training through `torchrun`, PyTorch's own launcher: ranks, seeds, shards and
rank-0 I/O. One process per GPU, each holding a full copy of the model and of the data set.

    torchrun --standalone --nproc-per-node=4 -m course_lib.cli train mnist-vp   # 4 GPUs, one machine

torchrun starts the processes and tells each its place through the environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `init` reads it, picks the rank's device
(cuda:LOCAL_RANK, or the CPU) and joins the process group (NCCL on CUDA, gloo on the CPU).
Without torchrun, `init` changes nothing and the run is one process of world size 1.

How a global batch of B examples is split (`train.train` uses these): every rank draws the same
B indices from the same data generator, and the batch is cut into S equal *shards*, each with its
own noise generator seeded by `shard_seed`; rank r computes the shards `rank_shards(S, W, r)`
and DistributedDataParallel averages the gradients once per step. S is fixed when a run starts
(its world size) and kept in its checkpoints, so the examples and noise of every step, and hence
the result up to float round-off, do not depend on how many processes compute them: one process
running S shards one after the other (gradient accumulation) gives the same run as S processes.
Each rank's global torch RNG (dropout) is seeded by `rank_seed`. Checkpoints, logs and sample
grids are written by rank 0 only (`Dist.is_main`). `StopOnSignal` turns Ctrl-C, a preemption's
SIGTERM or torchrun's shutdown into a request that every rank honours at the same step (the
training loop all-reduces it with the losses), so the last checkpoint is written before exit.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from .runtime import get_device


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a torchrun job."""

    rank: int = 0          # global rank, 0 .. world_size - 1
    world_size: int = 1    # number of processes, over all machines
    local_rank: int = 0    # rank on this machine: the index of its GPU

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and images."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process, joined in a process group."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise ValueError(f"environment variable {name} must be a non-negative integer, got {value!r}")
    return int(value)


def from_env() -> Dist:
    """The torchrun variables RANK, WORLD_SIZE and LOCAL_RANK (absent: one process)."""
    dist = Dist(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if dist.world_size < 1 or not 0 <= dist.rank < dist.world_size:
        raise ValueError(f"RANK={dist.rank} must lie in [0, WORLD_SIZE={dist.world_size})")
    return dist


def current() -> Dist:
    """This process's place: from the process group when one is running, else world size 1."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return Dist(torch_dist.get_rank(), torch_dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return Dist()


def init(device: str | None = None) -> tuple[Dist, torch.device]:
    """Join the torchrun job described by the environment and return (Dist, this rank's device).

    `device`: "cuda", "cpu", ... (None: CUDA when available). Under torchrun, rank r uses
    cuda:LOCAL_RANK with NCCL, or the CPU with gloo; MPS has no distributed backend, so a
    multi-process run without CUDA runs on the CPU. Without torchrun: `runtime.get_device(device)`.
    """
    dist = from_env()
    if not dist.enabled:
        return dist, get_device(device)
    kind = get_device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if dist.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={dist.local_rank} but this machine has {torch.cuda.device_count()} "
                             f"GPU(s); start at most that many processes per node (--nproc-per-node)")
        chosen = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if kind == "cuda" else "gloo", init_method="env://",
                                      rank=dist.rank, world_size=dist.world_size)
    return dist, chosen


def close() -> None:
    """Leave the process group (a no-op without one)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


# -- seeds and shards ----------------------------------------------------------------------------
def rank_seed(seed: int, *keys) -> int:
    """A 63-bit seed derived from (seed, *keys) by BLAKE2b: independent streams for each rank,
    shard or step that do not collide with the plain seeds seed + k."""
    text = "/".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def shard_seed(seed: int, shard: int, step: int = 0) -> int:
    """The seed of shard `shard`'s noise generator for a run started (or re-sharded) at `step`.
    Shard 0 of a fresh run gets seed + 1, the one generator of a single-process run."""
    return seed + 1 if shard == 0 and step == 0 else rank_seed(seed, "loss", step, shard)


def rank_shards(shards: int, world_size: int, rank: int) -> range:
    """The shards rank `rank` computes: a contiguous block of shards // world_size of them."""
    if shards % world_size:
        raise ValueError(f"the number of shards ({shards}) must be a multiple of the world size ({world_size})")
    per = shards // world_size
    return range(rank * per, (rank + 1) * per)


def shard_slice(batch_size: int, shards: int, shard: int) -> slice:
    """The examples of shard `shard` in a global batch: batch_size / shards of them."""
    if batch_size % shards:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of shards ({shards}), "
                         f"the world size the run started with")
    per = batch_size // shards
    return slice(shard * per, (shard + 1) * per)


def plan_shards(saved: int | None, requested: int | None, world_size: int, batch_size: int) -> int:
    """The number of shards S of a run: `requested`, else the checkpoint's (`saved`), else the
    world size. When the world size does not divide the checkpoint's S, the run continues with
    S = world size, fresh noise streams and a warning (the same distribution, another draw)."""
    if requested is not None and (not isinstance(requested, int) or isinstance(requested, bool) or requested < 1):
        raise ValueError(f"shards must be an integer >= 1 or None, got {requested!r}")
    n = requested or saved or world_size
    if n % world_size:
        if requested is not None:
            raise ValueError(f"shards={requested} must be a multiple of the world size {world_size}")
        warnings.warn(f"the checkpoint's run has {saved} shards, which {world_size} processes cannot "
                      f"split evenly; it continues with {world_size} shards of fresh seeded noise "
                      f"(the same distribution, another draw)", stacklevel=3)
        n = world_size
    if batch_size % n:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of shards "
                         f"({n}: the world size the run started with)")
    return n


class StopOnSignal:
    """With `enabled` (and in the main thread), SIGINT and SIGTERM (Ctrl-C, a preemption notice,
    torchrun's shutdown) set `requested` instead of raising; the old handlers return on exit."""

    def __init__(self, enabled: bool):
        self.enabled, self.requested, self._old = enabled, False, {}

    def __enter__(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if not self.requested and current().is_main:
            print(f"\n{signal.Signals(signum).name}: stopping at the next log point, with a checkpoint",
                  file=sys.stderr, flush=True)
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


# -- collectives (each a no-op for one process) --------------------------------------------------
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of x over the ranks, in place (gloo has no AVG, so SUM / world size)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.all_reduce(x, op=torch_dist.ReduceOp.SUM)
        x /= torch_dist.get_world_size()
    return x


def barrier() -> None:
    """Wait until every rank gets here."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def all_gather(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (picklable objects; small ones)."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return [obj]
    out = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(out, obj)
    return out
