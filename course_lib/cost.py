"""What a training step of a score-matching loss costs: its wall-clock time, and the number of
vector-Jacobian products with respect to the input x that the loss needs.

Timings are for figures and benchmark tables, never for assertions (they depend on the machine
and its load); the count of vector-Jacobian products is deterministic and can be asserted:
the implicit loss with the exact Jacobian trace takes D of them (one per diagonal entry), the
sliced loss one (for all its projections at once, on a batch repeated n_projections times), the
denoising loss none (Hyvarinen, 2005; Song, Garg, Shi & Ermon, 2019; Vincent, 2011).

`loss_fn(model, batch, generator) -> 0-d tensor` has the signature `course_lib.train.train` uses.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn

LossFn = Callable[[nn.Module, Tensor, torch.Generator], Tensor]


def _check_count(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so the clock measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(model: nn.Module, loss_fn: LossFn, batch: Tensor, *, steps: int = 5, warmup: int = 1,
                     lr: float = 1e-4, generator: torch.Generator | None = None) -> float:
    """Median wall-clock seconds of one AdamW step (loss, backward, update) of `loss_fn` on `batch`.

    The `warmup` steps run first and are not timed (they allocate the optimizer's state and warm
    caches); then each of `steps` steps is timed on its own and the median is returned, which a
    short burst of load on a shared machine does not move. `model`, already on the device of
    `batch: (B, *D)`, is trained in place; `generator` feeds the loss's noise (default: a
    generator on that device seeded with 0).
    """
    _check_count("steps", steps, 1)
    _check_count("warmup", warmup, 0)
    if not torch.is_tensor(batch) or batch.ndim < 2:
        raise ValueError(f"batch must be a tensor of shape (B, *D), got {type(batch).__name__}")
    device = batch.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    times = []
    for i in range(warmup + steps):
        _synchronize(device)
        start = time.perf_counter()
        loss = loss_fn(model, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_input_vjps(loss: Callable[[Callable[[Tensor], Tensor], Tensor], Tensor],
                     score_fn: Callable[[Tensor], Tensor], x: Tensor) -> int:
    """How many vector-Jacobian products with respect to its input the evaluation of
    `loss(score_fn, x)` takes (the training step's own backward pass is not counted).

    `loss(score_fn, x)` is e.g. `lambda s, x: implicit_score_matching_loss(s, x)`. Every input
    that reaches `score_fn` with requires_grad gets a hook, which fires once per gradient
    computed with respect to it (each `torch.autograd.grad(..., x)`); an input without
    requires_grad (the noised x~ of the denoising loss) needs no derivative and counts none.
    """
    count = 0

    def hook(grad: Tensor) -> None:
        nonlocal count
        count += 1

    def counted(y: Tensor) -> Tensor:
        if y.requires_grad:
            y.register_hook(hook)
        return score_fn(y)

    loss(counted, x)
    return count
