"""Small tensor helpers shared by every module: broadcasting, random probes, argument checks."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def append_dims(x: Tensor, target_ndim: int) -> Tensor:
    """Append trailing singleton dimensions to `x` until it has `target_ndim` dimensions.

    The one broadcasting helper of the library: a per-sample quantity `t: (B,)` becomes
    `(B, 1)` against 2-D points and `(B, 1, 1, 1)` against images, so the same update rule
    serves both.
    """
    missing = target_ndim - x.ndim
    if missing < 0:
        raise ValueError(f"x has {x.ndim} dimensions, more than target_ndim={target_ndim}")
    return x[(...,) + (None,) * missing]


def batch_time(t: float | Tensor, x: Tensor) -> Tensor:
    """Return `t` as a `(B,)` tensor on `x`'s device and dtype, for `x: (B, *D)`.

    A Python float or a 0-d tensor is broadcast to every sample; a `(B,)` tensor is checked.
    """
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def rademacher_like(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Independent +-1 entries with probability 1/2, of x's shape, dtype and device.

    A probe v with E[v v^T] = I, as sliced score matching and Hutchinson's trace estimator
    need. Among probes with i.i.d. entries it gives Hutchinson's estimator v^T A v its least
    variance (Hutchinson, 1990), 2 sum_{i != j} A_ij^2 for symmetric A; Gaussian entries add
    2 sum_i A_ii^2. Probes with dependent entries can do better: for D = 6 and A = 11^T - I,
    sqrt(D) times a uniform unit vector has variance 45 against Rademacher's 60."""
    bits = torch.randint(0, 2, x.shape, generator=generator, device=x.device)
    return (2 * bits - 1).to(x.dtype)


def gaussian_like(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal entries of x's shape, dtype and device (torch.randn_like with a generator)."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def check_positive(name: str, value: float) -> float:
    """Raise a ValueError naming `name` unless `value` is a finite number > 0."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_time(t: float | Tensor, low: float, high: float, name: str = "t") -> None:
    """Raise a ValueError naming `name` unless every entry of `t` lies in `[low, high]`.

    A slack of 1e-6 relative to each end absorbs float32 round-off of a time grid's ends
    (float32 has a relative spacing of 1.2e-7): `low * (1 - 1e-6)` passes and VE's
    `eps = 1e-5` is not widened to `0.9e-5`; at the top the slack is `1e-6 * max(|high|, 1)`.
    """
    t = torch.as_tensor(t)
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN")
    t_min, t_max = float(t.min()), float(t.max())
    if t_min < low - 1e-6 * abs(low) or t_max > high + 1e-6 * max(abs(high), 1.0):
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got values in [{t_min:g}, {t_max:g}]")
