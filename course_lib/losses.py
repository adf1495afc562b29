"""Score-matching objectives: implicit (Hyvarinen), sliced (Hutchinson), denoising (Vincent),
multi-sigma NCSN and continuous-time DSM for any SDE of `course_lib.sde`.

Each loss is a 0-d tensor whose gradient trains `score_fn`; the noise is drawn with the
optional `generator=` on x's device. Shapes: `x: (B, D)` for the implicit and sliced losses
(they differentiate the score with respect to x), `x: (B, *D)` for the denoising ones.
"""

from __future__ import annotations

import math
import weakref
from typing import Callable

import torch
from torch import Tensor

from .sde import SDE
from .utils import append_dims, gaussian_like, rademacher_like

Projection = Callable[..., Tensor]


def _check_x(x: Tensor, exact_ndim: int | None = None) -> None:
    """ValueError naming x unless it is a floating tensor of shape (B, D) (or (B, *D))."""
    ok = torch.is_tensor(x) and x.is_floating_point() and x.ndim >= 2 and x.shape[0] >= 1
    if not ok or (exact_ndim is not None and x.ndim != exact_ndim):
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        allowed = "(B, D)" if exact_ndim == 2 else "(B, *D) with at least 2 dimensions"
        raise ValueError(f"x must be a floating tensor of shape {allowed}, got {shape}")


def _checked_score(s: Tensor, x: Tensor) -> Tensor:
    """`s` unchanged if it has x's shape, else a ValueError naming score_fn (a (B, 1) score
    would broadcast against x: (B, D) into a finite but wrong loss)."""
    if not torch.is_tensor(s) or s.shape != x.shape:
        shape = tuple(s.shape) if torch.is_tensor(s) else type(s).__name__
        raise ValueError(f"score_fn must return a tensor of x's shape {tuple(x.shape)}, got {shape}")
    return s


def _sq_norm(v: Tensor) -> Tensor:
    """||v_b||^2 per sample: (B,) for v: (B, *D)."""
    return v.flatten(1).pow(2).sum(1)


# -- implicit and sliced score matching -------------------------------------------------------
def implicit_score_matching_loss(score_fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Hyvarinen's (2005) implicit score matching, with the exact Jacobian trace:

        J(s) = E_x[ tr(grad_x s(x)) + ||s(x)||^2 / 2 ],

    equal to the Fisher divergence E||s - grad log p||^2 / 2 minus a constant of p. The trace
    costs D backward passes (one per diagonal entry), so this is meant for low dimension; the
    graph is kept (create_graph=True), so the loss trains. `score_fn(x) -> (B, D)`, `x: (B, D)`.
    """
    _check_x(x, exact_ndim=2)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = _checked_score(score_fn(x), x)
        trace = torch.zeros_like(s[:, 0])
        for i in range(x.shape[1]):
            (grad_i,) = torch.autograd.grad(s[:, i].sum(), x, create_graph=True)
            trace = trace + grad_i[:, i]
        return (trace + 0.5 * _sq_norm(s)).mean()


def sliced_score_matching_loss(score_fn: Callable[[Tensor], Tensor], x: Tensor, *, n_projections: int = 1,
                               projection: Projection = rademacher_like, variance_reduced: bool = False,
                               generator: torch.Generator | None = None) -> Tensor:
    """Sliced score matching (Song, Garg, Shi & Ermon, 2019), Hutchinson's estimate of the trace:

        J(s) = E_{x, v}[ v^T grad_x s(x) v + (v^T s(x))^2 / 2 ],

    or, with `variance_reduced=True` (SSM-VR), E[ v^T grad_x s(x) v + ||s(x)||^2 / 2 ], exact in
    the second term since E[v v^T] = I. Both are unbiased for the implicit loss whenever the
    projections have E[v v^T] = I: `rademacher_like` (default), `gaussian_like` or `torch.randn_like`.
    `projection(x)` is called as `projection(x, generator=generator)` when a generator is given.
    Each of the `n_projections` directions costs one vector-Jacobian product (the batch is
    repeated n_projections times and differentiated once). `x: (B, *D)`, `score_fn(x)` of x's shape.
    """
    _check_x(x)
    if not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections must be an integer >= 1, got {n_projections!r}")
    if not callable(projection):
        raise ValueError(f"projection must be a callable like torch.randn_like, got {projection!r}")
    with torch.enable_grad():
        x_rep = x.detach().repeat(n_projections, *([1] * (x.ndim - 1))).requires_grad_(True)
        v = projection(x_rep) if generator is None else projection(x_rep, generator=generator)
        s = _checked_score(score_fn(x_rep), x_rep)
        v_s = (v * s).flatten(1).sum(1)
        (jt_v,) = torch.autograd.grad(v_s.sum(), x_rep, create_graph=True)  # J^T v per sample
        v_j_v = (v * jt_v).flatten(1).sum(1)
        second = _sq_norm(s) if variance_reduced else v_s**2
        return (v_j_v + 0.5 * second).mean()


# -- denoising score matching ------------------------------------------------------------------
def _as_positive(name: str, value) -> float:
    """A finite float > 0 (a 1-element tensor is accepted), else ValueError naming `name`."""
    if torch.is_tensor(value) and value.numel() == 1:
        value = float(value)
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def denoising_score_matching_loss(score_fn: Callable[[Tensor], Tensor], x: Tensor, sigma: float, *,
                                  generator: torch.Generator | None = None) -> Tensor:
    """Vincent's (2011) denoising score matching at one noise level sigma:

        J(s) = E_{x, z}[ ||s(x + sigma z) + z / sigma||^2 / 2 ],   z ~ N(0, I),

    whose target -z/sigma = grad log N(x~; x, sigma^2 I) makes J equal the Fisher divergence to
    the noised density p_sigma = p * N(0, sigma^2 I) up to a constant. `x: (B, *D)`,
    `score_fn(x_noisy)` of x's shape.
    """
    _check_x(x)
    sigma = _as_positive("sigma", sigma)
    z = gaussian_like(x, generator=generator)
    s = _checked_score(score_fn(x + sigma * z), x)
    return 0.5 * _sq_norm(s + z / sigma).mean()


def ncsn_loss(score_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigmas: Tensor, *,
              generator: torch.Generator | None = None,
              weighting: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Song & Ermon's (2019) noise-conditional objective over a ladder sigma_1 > ... > sigma_L:

        J(s) = E_i E_{x, z}[ lambda(sigma_i) ||s(x + sigma_i z, sigma_i) + z / sigma_i||^2 / 2 ],

    with lambda(sigma) = sigma^2 and one index i ~ U{1..L} per sample (an unbiased estimate of
    their average over i). `x: (B, *D)`, `sigmas: (L,)`, `score_fn(x_noisy, sigma)` with sigma: (B,).
    `weighting(sigma: (B,)) -> (B,)` replaces lambda (e.g. `torch.ones_like` for the unweighted
    objective, to see why sigma^2 is used).
    """
    _check_x(x)
    if not torch.is_tensor(sigmas) or sigmas.ndim != 1 or sigmas.numel() < 1:
        raise ValueError("sigmas must be a 1-D tensor of noise levels (L,) with L >= 1")
    if not bool((torch.isfinite(sigmas) & (sigmas > 0)).all()):
        raise ValueError("sigmas must be finite and > 0")
    idx = torch.randint(0, sigmas.numel(), (x.shape[0],), generator=generator, device=x.device)
    sigma = sigmas.to(device=x.device, dtype=x.dtype)[idx]
    z = gaussian_like(x, generator=generator)
    s = _checked_score(score_fn(x + append_dims(sigma, x.ndim) * z, sigma), x)
    if weighting is None:  # lambda(sigma) ||s + z / sigma||^2 = ||sigma s + z||^2
        return 0.5 * _sq_norm(append_dims(sigma, x.ndim) * s + z).mean()
    lam = weighting(sigma)
    if not torch.is_tensor(lam) or lam.shape != sigma.shape:
        raise ValueError(f"weighting must map sigma: ({x.shape[0]},) to a tensor of the same shape, "
                         f"got {tuple(lam.shape) if torch.is_tensor(lam) else type(lam).__name__}")
    return 0.5 * (lam * _sq_norm(s + z / append_dims(sigma, x.ndim))).mean()


# -- continuous-time DSM -----------------------------------------------------------------------
def std_squared_weighting(sde: SDE, t: Tensor) -> Tensor:
    """lambda(t) = sigma(t)^2 (score_sde's default): lambda ||s + z/sigma||^2 = ||sigma s + z||^2,
    the eps-prediction MSE."""
    return sde.marginal_std(t) ** 2


def likelihood_weighting(sde: SDE, t: Tensor) -> Tensor:
    """lambda(t) = g(t)^2, which makes the loss bound the negative log-likelihood (Song, Durkan,
    Murray & Ermon, 2021, "Maximum likelihood training of score-based diffusion models", Thm. 1)."""
    return sde.diffusion(t) ** 2


class _ImportanceTable:
    """Inverse-CDF sampling of t in [eps, T] with density q(t) proportional to g(t)^2 / sigma(t)^2.

    The unnormalized density is integrated once by the trapezoid rule on a grid uniform in
    log t (the density grows like 1/t near 0 for VP), giving a piecewise-linear CDF. Sampling
    inverts that CDF exactly, so t follows the piecewise-constant density q_hat of the table,
    and `density` returns q_hat itself: dividing by it keeps the estimator exactly unbiased,
    whatever the tabulation error.
    """

    def __init__(self, sde: SDE, n_grid: int = 2048):
        ts = torch.logspace(math.log10(sde.eps), math.log10(sde.T), n_grid, dtype=torch.float64)
        p = sde.diffusion(ts) ** 2 / sde.marginal_std(ts) ** 2
        cells = 0.5 * (p[1:] + p[:-1]) * (ts[1:] - ts[:-1])
        cdf = torch.cat([ts.new_zeros(1), torch.cumsum(cells, 0)])
        self.ts, self.cdf = ts, cdf / cdf[-1]
        self._on = {}

    def _tables(self, device, dtype) -> tuple[Tensor, Tensor]:
        key = (device, dtype)
        if key not in self._on:
            self._on[key] = (self.ts.to(device=device, dtype=dtype), self.cdf.to(device=device, dtype=dtype))
        return self._on[key]

    def sample(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Map u ~ U[0, 1): (B,) to (t: (B,), q_hat(t): (B,))."""
        ts, cdf = self._tables(u.device, u.dtype)
        i = (torch.searchsorted(cdf, u, right=True) - 1).clamp(0, len(ts) - 2)
        width_t, width_c = ts[i + 1] - ts[i], cdf[i + 1] - cdf[i]
        t = ts[i] + (u - cdf[i]) / width_c * width_t
        return t.clamp(ts[0], ts[-1]), width_c / width_t


_TABLES: "weakref.WeakKeyDictionary[SDE, _ImportanceTable]" = weakref.WeakKeyDictionary()


def importance_sample_time(sde: SDE, n: int, *, generator=None, device=None, dtype=None) -> tuple[Tensor, Tensor]:
    """Draw t: (n,) in [eps, T] with density q(t) proportional to g(t)^2 / sigma(t)^2 and return
    (t, q(t)), q being the exact density of the draws (the tabulated, piecewise-constant one).
    The CDF table is built once per SDE object and reused."""
    if sde not in _TABLES:
        _TABLES[sde] = _ImportanceTable(sde)
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    return _TABLES[sde].sample(u)


def dsm_loss(score_fn: Callable[[Tensor, Tensor], Tensor], sde: SDE, x: Tensor, *,
             weighting: Callable[[SDE, Tensor], Tensor] = std_squared_weighting,
             importance_sampling: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """Continuous-time denoising score matching (Song et al., 2021, eq. 7) for any SDE:

        J(s) = E_{t ~ U[eps, T]}[ lambda(t) E_{x_0, z} ||s(x_t, t) + z / sigma(t)||^2 ] / 2,

    x_t = alpha(t) x_0 + sigma(t) z. It is an average over t ~ U[eps, T], not an integral: with
    `likelihood_weighting` it equals the term (1/2) int_eps^T g(t)^2 E||s(x_t, t) - grad log
    p_{0t}(x_t | x_0)||^2 dt of Song, Durkan, Murray & Ermon's (2021) likelihood bound divided by
    (T - eps); the bound itself adds terms that do not depend on s (the gap between denoising and
    explicit score matching, and the prior's). `weighting(sde, t) -> lambda(t): (B,)`, e.g.
    `std_squared_weighting` or `likelihood_weighting`. With `importance_sampling=True`, t is drawn
    from q(t) proportional to g(t)^2 / sigma(t)^2 (`importance_sample_time`) and each term is
    divided by (T - eps) q(t): the same expectation, with lower variance for
    `likelihood_weighting` (lambda / q is then proportional to sigma^2). `x: (B, *D)`.
    """
    _check_x(x)
    if not callable(weighting):
        raise ValueError(f"weighting must be a callable weighting(sde, t) -> (B,), such as "
                         f"std_squared_weighting or likelihood_weighting; got {weighting!r}")
    if not isinstance(importance_sampling, bool):
        raise ValueError(f"importance_sampling must be True or False, got {importance_sampling!r}")
    b = x.shape[0]
    if importance_sampling:
        t, q = importance_sample_time(sde, b, generator=generator, device=x.device, dtype=x.dtype)
        ratio = 1.0 / ((sde.T - sde.eps) * q)  # U[eps, T] density over q(t)
    else:
        t = sde.eps + (sde.T - sde.eps) * torch.rand(b, generator=generator, device=x.device, dtype=x.dtype)
        ratio = torch.ones_like(t)
    z = gaussian_like(x, generator=generator)
    sigma = sde.marginal_std(t)
    s = _checked_score(score_fn(sde.perturb(x, t, z), t), x)
    per_sample = _sq_norm(s + z / append_dims(sigma, x.ndim))
    return 0.5 * (weighting(sde, t) * ratio * per_sample).mean()
