"""What a training step of a score-matching loss costs: its wall-clock time, its floating-point
operations, and the number of vector-Jacobian products with respect to the input x it needs.

Timings are for figures and benchmark tables, never for assertions (they depend on the machine
and its load). The other two are deterministic and can be asserted: the implicit loss with the
exact Jacobian trace takes D vector-Jacobian products (one per diagonal entry), the sliced loss
one (for all its projections at once, on a batch repeated n_projections times), the denoising
loss none (Hyvarinen, 2005; Song, Garg, Shi & Ermon, 2019; Vincent, 2011).

`loss_fn(model, batch, generator) -> 0-d tensor` has the signature `course_lib.train.train` uses.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

LossFn = Callable[[nn.Module, Tensor, torch.Generator], Tensor]


def _check_count(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_step_args(model, loss_fn, batch) -> None:
    """ValueErrors naming model, loss_fn or batch unless they can make a training step."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable loss_fn(model, batch, generator), got {loss_fn!r}")
    if not torch.is_tensor(batch) or batch.ndim < 2:
        shape = tuple(batch.shape) if torch.is_tensor(batch) else type(batch).__name__
        raise ValueError(f"batch must be a tensor of shape (B, *D), got {shape}")


def _scalar_loss(loss: Tensor) -> Tensor:
    """`loss` unchanged if it is a 0-d tensor with a graph, else a ValueError naming loss_fn."""
    if not torch.is_tensor(loss) or loss.ndim != 0 or not loss.requires_grad:
        what = f"shape {tuple(loss.shape)}, requires_grad={loss.requires_grad}" if torch.is_tensor(loss) \
            else type(loss).__name__
        raise ValueError(f"loss_fn must return a 0-d tensor that depends on the model's parameters, got {what}")
    return loss


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
    _check_step_args(model, loss_fn, batch)
    device = batch.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    times = []
    for i in range(warmup + steps):
        _synchronize(device)
        start = time.perf_counter()
        loss = _scalar_loss(loss_fn(model, batch, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


class _FlopCount(TorchDispatchMode):
    """Adds up the FLOPs of every operator in torch.utils.flop_counter's registry (matrix
    products, convolutions, attention). Unlike torch's FlopCounterMode it tracks no modules, whose
    hooks refuse the torch.autograd.grad(..., x) on a leaf input that the implicit loss takes."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += int(count(*args, **kwargs, out_val=out))
        return out


def flops_per_step(model: nn.Module, loss_fn: LossFn, batch: Tensor, *,
                   generator: torch.Generator | None = None) -> int:
    """Floating-point operations of one training step of `loss_fn` on `batch`: the loss, with
    every derivative it takes in x, and its backward pass to the parameters.

    Counted as torch.utils.flop_counter counts them (2 m n k for an (m, k) @ (k, n) product;
    elementwise work, the optimizer's update among it, is left out), so the number is the same on
    every machine and device. No update is made and the gradients of `model` are set to None
    afterwards; `batch: (B, *D)` on the model's device; `generator` as in `seconds_per_step`.
    """
    _check_step_args(model, loss_fn, batch)
    if generator is None:
        generator = torch.Generator(device=batch.device).manual_seed(0)
    with _FlopCount() as counter:
        _scalar_loss(loss_fn(model, batch, generator)).backward()
    model.zero_grad(set_to_none=True)
    return counter.total


def count_input_vjps(loss: Callable[[Callable[[Tensor], Tensor], Tensor], Tensor],
                     score_fn: Callable[[Tensor], Tensor], x: Tensor) -> int:
    """How many vector-Jacobian products with respect to its input the evaluation of
    `loss(score_fn, x)` takes (the training step's own backward pass is not counted).

    `loss(score_fn, x)` is e.g. `lambda s, x: implicit_score_matching_loss(s, x)`. Every input
    that reaches `score_fn` with requires_grad gets a hook, which fires once per gradient
    computed with respect to it (each `torch.autograd.grad(..., x)`); an input without
    requires_grad (the noised x~ of the denoising loss) needs no derivative and counts none.
    """
    if not callable(loss) or not callable(score_fn):
        raise ValueError(f"loss and score_fn must be callables, got {loss!r} and {score_fn!r}")
    if not torch.is_tensor(x):
        raise ValueError(f"x must be a tensor of shape (B, *D), got {type(x).__name__}")
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
