"""Exact likelihood through the probability-flow ODE, and encoding / decoding with it.

Along a solution of dx/dt = v(x, t) = f(x, t) - g(t)^2 score(x, t) / 2 the instantaneous
change of variables (Chen et al., 2018) gives d log p_t(x_t) / dt = -div v(x_t, t), so

    log p_eps(x) = log p_T(z) + int_eps^T div v(x_t, t) dt,   z = x_T,

(Song et al., 2021, App. D). The divergence is exact (D backward passes, for low dimension)
or Hutchinson's estimate E[u^T (dv/dx) u] with probes u of identity covariance, drawn once
per solve as in FFJORD so the integrand stays smooth in t. The solve runs in scipy's
`solve_ivp` on the flattened batch (float64 numpy at the solver boundary).

Shapes: `x: (B, *D)`; per-sample outputs `(B,)`. The exact divergence assumes the score acts
on each sample independently (no batch-coupling layers).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .samplers import ode_rk45, solve_ivp_torch
from .sde import SDE, probability_flow_drift
from .utils import append_dims, batch_time, check_positive

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def exact_divergence(velocity, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(v(x, t): (B, *D), div_x v: (B,)) with the trace of the Jacobian summed from D
    backward passes, one per coordinate."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        flat = v.flatten(1)
        div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for i in range(flat.shape[1]):
            (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
            div = div + grad.flatten(1)[:, i]
    return v.detach(), div


def hutchinson_divergence(velocity, x: Tensor, t: Tensor, probes: Tensor) -> tuple[Tensor, Tensor]:
    """(v(x, t), mean over probes u of u^T (dv/dx) u): Hutchinson's unbiased estimate of
    div v, probes: (K, B, *D) with E[u u^T] = I; one vector-Jacobian product per probe."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for u in probes:
            (vjp,) = torch.autograd.grad(v, x, grad_outputs=u, retain_graph=True)
            div = div + (vjp * u).flatten(1).sum(1)
    return v.detach(), div / len(probes)


def _check_arguments(sde: SDE, t_start: float, t_end: float, rtol, atol, hutchinson_samples) -> None:
    sde.check_time(t_start, "t_start")
    sde.check_time(t_end, "t_end")
    if not t_start < t_end:
        raise ValueError(f"t_start must be smaller than t_end, got {t_start} >= {t_end}")
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    if not isinstance(hutchinson_samples, int) or hutchinson_samples < 1:
        raise ValueError(f"hutchinson_samples must be an integer >= 1, got {hutchinson_samples!r}")


def pf_ode_log_likelihood(score_fn: ScoreFn, sde: SDE, x: Tensor, *, probe=None, hutchinson_samples: int = 1,
                          prior_logp: Callable[[Tensor], Tensor] | None = None, t_start: float | None = None,
                          t_end: float | None = None, rtol: float = 1e-5, atol: float = 1e-5,
                          method: str = "RK45", generator=None) -> tuple[Tensor, Tensor, int]:
    """log p_{t_start}(x) by the probability-flow ODE from t_start (default eps) to t_end (default T).

    probe: None for the exact divergence, else a probe function such as `rademacher_like` or
    `gaussian_like` from course_lib.utils (probe(x, generator=...)) for Hutchinson's
    estimator with `hutchinson_samples` probes. prior_logp: the terminal log-density
    z -> (B,) (default `sde.prior_logp`, the N(0, prior_std^2 I) that approximates p_T;
    pass the exact p_T to remove that mismatch).
    Returns (log p: (B,), z = x_{t_end}: (B, *D), NFE of the solver)."""
    t_start = sde.eps if t_start is None else float(t_start)
    t_end = sde.T if t_end is None else float(t_end)
    _check_arguments(sde, t_start, t_end, rtol, atol, hutchinson_samples)
    prior_logp = sde.prior_logp if prior_logp is None else prior_logp
    shape, dtype, device, n = x.shape, x.dtype, x.device, x.numel()
    probes = None if probe is None else torch.stack([probe(x, generator=generator) for _ in range(hutchinson_samples)])

    def velocity(xt, t):
        return probability_flow_drift(sde, score_fn, xt, t)

    def rhs(t: float, state: Tensor) -> Tensor:
        """d/dt of the state [x_t, log-density change]: [v(x_t, t), div v]."""
        xt = state[:n].reshape(shape)
        tt = batch_time(t, xt)
        if probes is None:
            v, div = exact_divergence(velocity, xt, tt)
        else:
            v, div = hutchinson_divergence(velocity, xt, tt, probes)
        return torch.cat([v.reshape(-1), div])

    y0 = torch.cat([x.detach().reshape(-1), torch.zeros(shape[0], device=device, dtype=dtype)])
    y_end, nfe = solve_ivp_torch(rhs, y0, (t_start, t_end), method=method, rtol=rtol, atol=atol)
    z, delta = y_end[:n].reshape(shape), y_end[n:]
    return prior_logp(z) + delta, z, nfe


def bits_per_dim(logp: Tensor, dim: int, *, n_bins: int = 256) -> Tensor:
    """Bits per dimension of discrete data from the density logp: (B,) of its dequantized
    version y = 2 (k + u) / n_bins - 1 in [-1, 1] (k in {0..n_bins-1}, u ~ U[0, 1)^D).

    Each bin has width w = 2 / n_bins in y, so log P(k) >= E_u[log p(y)] + D log w and
    bpd = -(logp - D log(n_bins / 2)) / (D log 2) = -logp / (D log 2) + log2(n_bins / 2),
    i.e. +7 bits for 8-bit data (score_sde's offset for centred data). Scaling by k / 127.5 - 1
    instead (width 2/255) shifts this by log2(256/255) ~ 0.006 bits."""
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    return -(logp - dim * math.log(n_bins / 2)) / (dim * math.log(2.0))


def dequantize(k: Tensor, *, n_bins: int = 256, generator=None, dtype=None) -> Tensor:
    """Uniform dequantization of integers k in {0..n_bins-1} to y = 2 (k + u) / n_bins - 1 in [-1, 1)."""
    if not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    if bool((k < 0).any()) or bool((k > n_bins - 1).any()):
        raise ValueError(f"k must lie in {{0, ..., {n_bins - 1}}}")
    dtype = dtype or torch.get_default_dtype()
    u = torch.rand(k.shape, generator=generator, device=k.device, dtype=dtype)
    return 2.0 * (k.to(dtype) + u) / n_bins - 1.0


def encode(score_fn: ScoreFn, sde: SDE, x: Tensor, *, rtol: float = 1e-5, atol: float = 1e-5,
           method: str = "RK45") -> tuple[Tensor, int]:
    """Data x at eps -> latent z at T along the probability-flow ODE: (z, NFE)."""
    return ode_rk45(score_fn, sde, x, t_start=sde.eps, t_end=sde.T, rtol=rtol, atol=atol, method=method)


def decode(score_fn: ScoreFn, sde: SDE, z: Tensor, *, rtol: float = 1e-5, atol: float = 1e-5,
           method: str = "RK45") -> tuple[Tensor, int]:
    """Latent z at T -> data x at eps along the probability-flow ODE: (x, NFE)."""
    return ode_rk45(score_fn, sde, z, t_start=sde.T, t_end=sde.eps, rtol=rtol, atol=atol, method=method)


def slerp(z0: Tensor, z1: Tensor, u: Tensor) -> Tensor:
    """Spherical interpolation between latents (Shoemake, 1985; as DDIM interpolates, Song, Meng &
    Ermon, 2021): z(u) = sin((1 - u) W) / sin W z0 + sin(u W) / sin W z1, W the angle between z0
    and z1. Gaussian latents in D dimensions lie near the sphere of radius sqrt(D); the straight
    line between two of them cuts inside it (its midpoint has norm ~ sqrt(D / 2) for independent
    ones), whereas z(u) keeps the norm for |z0| = |z1|.

    z0, z1: (B, *D); u: (K,) fractions in [0, 1]; returns (K, B, *D). Written with sinc, so
    nearly parallel pairs reduce to the straight line; antipodal pairs (W = pi) are refused."""
    if z0.shape != z1.shape or z0.ndim < 2:
        raise ValueError(f"z0 and z1 must have the same shape (B, *D), got {tuple(z0.shape)} and {tuple(z1.shape)}")
    u = torch.as_tensor(u, device=z0.device, dtype=z0.dtype).reshape(-1)
    if bool(((u < 0) | (u > 1)).any()):
        raise ValueError("u must hold fractions in [0, 1]")
    a, b = z0.flatten(1), z1.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    omega = torch.arccos(cos.clamp(-1.0, 1.0))  # (B,)
    if bool((omega > math.pi - 1e-6).any()):
        raise ValueError("z0 and z1 must not be antipodal: the great circle between them is not unique")
    w = omega / math.pi  # sin(c W) / sin(W) = c sinc(c w) / sinc(w) with sinc(x) = sin(pi x) / (pi x)
    u = u[:, None]
    w0 = (1 - u) * torch.sinc((1 - u) * w) / torch.sinc(w)  # (K, B)
    w1 = u * torch.sinc(u * w) / torch.sinc(w)
    return append_dims(w0, z0.ndim + 1) * z0 + append_dims(w1, z0.ndim + 1) * z1
