"""DPM-Solver (Lu et al., 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic
Model Sampling in Around 10 Steps") and DPM-Solver++(2M) (Lu et al., 2022, "DPM-Solver++:
Fast Solver for Guided Sampling of Diffusion Probabilistic Models").

The probability-flow ODE is semi-linear. In the half log-SNR lambda(t) = log alpha - log sigma
its exact solution from time s to time t, with h = lambda_t - lambda_s > 0, is

    x_t = (alpha_t / alpha_s) x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-lambda} eps(x_lambda) dlambda
        = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^{lambda} x0(x_lambda) dlambda,

with eps = -sigma * score the noise prediction and x0 = E[x_0 | x_t] (Tweedie) the data
prediction. DPM-Solver-k integrates the linear part exactly and Taylor-expands eps in lambda;
DPM-Solver++ does the same with x0. Nothing here assumes alpha^2 + sigma^2 = 1: the VE SDE
(alpha = 1, lambda = -log sigma) is solved by the same formulas, exactly.

Notation of the papers: a step goes from the current time s to the next time t < s,
h = lambda_t - lambda_s, phi_1 = expm1(h). The noise schedule is read once per grid in float64
(`samplers.levels`), so steps cost only model calls and fused passes over `x` with scalar
coefficients (`samplers.combine`).

NFE: DPM-Solver-k uses k evaluations per step (NFE = k * steps); DPM-Solver++(2M) one per
step. `singlestep_plan` mixes orders so that any NFE budget is used exactly (the paper's
"DPM-Solver-fast").
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .samplers import Level, NFECounter, check_grid, combine, data_prediction, levels, noise_prediction
from .sde import SDE, VPSDE

_REFERENCE_VP = VPSDE()  # the schedule that `vp_time_power_grid` measures time in

ScoreFn = Callable[[Tensor, Tensor], Tensor]


# -- time grids ------------------------------------------------------------------------
def check_steps(n: int) -> None:
    """ValueError unless n, a number of steps, is an integer >= 1."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (number of steps) must be an integer >= 1, got {n!r}")


def pin_ends(t: Tensor, sde: SDE, *, device=None, dtype=None) -> Tensor:
    """A grid `t: (n + 1,)` from T to eps with its endpoints set to exactly T and eps, on the
    requested device and dtype (default dtype: torch's default). Grid builders end with it."""
    t[0], t[-1] = sde.T, sde.eps
    return t.to(device=device, dtype=dtype or torch.get_default_dtype())


def logsnr_grid(sde: SDE, n: int, *, device=None, dtype=None) -> Tensor:
    """n + 1 times from T to eps, uniform in lambda(t) (DPM-Solver's 'logSNR' skip type)."""
    check_steps(n)
    ends = torch.tensor([sde.T, sde.eps], dtype=torch.float64)
    lam_T, lam_eps = sde.marginal_lambda(ends).tolist()
    lam = torch.linspace(lam_T, lam_eps, n + 1, dtype=torch.float64)
    return pin_ends(sde.inverse_lambda(lam), sde, device=device, dtype=dtype)


def time_uniform_grid(sde: SDE, n: int, *, device=None, dtype=None) -> Tensor:
    """n + 1 times from T to eps, uniform in t."""
    check_steps(n)
    return pin_ends(torch.linspace(sde.T, sde.eps, n + 1, dtype=torch.float64), sde, device=device, dtype=dtype)


def quadratic_grid(sde: SDE, n: int, *, device=None, dtype=None) -> Tensor:
    """n + 1 times from T to eps, uniform in sqrt(t) (DPM-Solver's 'time_quadratic', as in DDIM)."""
    check_steps(n)
    root = torch.linspace(math.sqrt(sde.T), math.sqrt(sde.eps), n + 1, dtype=torch.float64)
    return pin_ends(root**2, sde, device=device, dtype=dtype)


def vp_time_power_grid(sde: SDE, n: int, k: float = 2.5, *, device=None, dtype=None) -> Tensor:
    """n + 1 times from T to eps, uniform in tau^(1/k), where tau(lambda) is the time at which the
    default VP SDE (beta from 0.1 to 20) reaches the half log-SNR lambda; each node is then mapped
    to `sde`'s own time with the same lambda. For that VP SDE it is the grid uniform in t^(1/k)
    (k = 2: `quadratic_grid`). Defined through lambda, it gives every SDE the same nodes over the
    same lambda range (the solution of the probability-flow ODE in lambda and x / alpha does not
    depend on the SDE), denser in the middle of the range than `logsnr_grid` and sparser at both
    ends: the default grid of `course_lib.sampling` (k = 2.5)."""
    check_steps(n)
    if not (isinstance(k, (int, float)) and math.isfinite(k) and k >= 1):
        raise ValueError(f"k must be a finite number >= 1, got {k!r}")
    ends = torch.tensor([sde.T, sde.eps], dtype=torch.float64)
    tau_T, tau_eps = _REFERENCE_VP.inverse_lambda(sde.marginal_lambda(ends)).tolist()
    root = torch.linspace(tau_T ** (1.0 / k), tau_eps ** (1.0 / k), n + 1, dtype=torch.float64)
    lam = _REFERENCE_VP.marginal_lambda(root**k)
    return pin_ends(sde.inverse_lambda(lam), sde, device=device, dtype=dtype)


# -- DPM-Solver steps (noise prediction) ----------------------------------------------------
def dpm_solver_1_step(x: Tensor, eps_s: Tensor, s: Level, t: Level) -> Tensor:
    """DPM-Solver-1 = DDIM, eq. (3.7): x_t = (alpha_t/alpha_s) x_s - sigma_t (e^h - 1) eps_s."""
    h = t.lam - s.lam
    phi_1 = math.expm1(h)
    return combine((t.alpha / s.alpha, x), (-t.sigma * phi_1, eps_s))


def dpm_solver_2_step(score_fn: ScoreFn, x: Tensor, eps_s: Tensor, s: Level, s1: Level, t: Level) -> Tensor:
    """DPM-Solver-2, Algorithm 4 (r1 = 0.5 gives Algorithm 1); s1 at lambda_s + r1 h."""
    h = t.lam - s.lam
    r1 = (s1.lam - s.lam) / h
    phi_1 = math.expm1(h)
    u = dpm_solver_1_step(x, eps_s, s, s1)
    d1 = noise_prediction(score_fn, u, s1).sub_(eps_s)
    return combine((t.alpha / s.alpha, x), (-t.sigma * phi_1, eps_s), (-t.sigma * phi_1 / (2.0 * r1), d1))


def dpm_solver_3_step(
    score_fn: ScoreFn, x: Tensor, eps_s: Tensor, s: Level, s1: Level, s2: Level, t: Level
) -> Tensor:
    """DPM-Solver-3, Algorithm 5 (r1 = 1/3, r2 = 2/3 give Algorithm 2); s_k at lambda_s + r_k h."""
    h = t.lam - s.lam
    r1, r2 = (s1.lam - s.lam) / h, (s2.lam - s.lam) / h
    phi_1, phi_12, phi_22 = math.expm1(h), math.expm1(r2 * h), math.expm1(h) / h - 1.0
    u1 = dpm_solver_1_step(x, eps_s, s, s1)
    d1 = noise_prediction(score_fn, u1, s1).sub_(eps_s)
    c_d1 = -s2.sigma * r2 / r1 * (phi_12 / (r2 * h) - 1.0)
    u2 = combine((s2.alpha / s.alpha, x), (-s2.sigma * phi_12, eps_s), (c_d1, d1))
    d2 = noise_prediction(score_fn, u2, s2).sub_(eps_s)
    return combine((t.alpha / s.alpha, x), (-t.sigma * phi_1, eps_s), (-t.sigma / r2 * phi_22, d2))


# -- singlestep samplers ---------------------------------------------------------------------
# intermediate points of a singlestep step of each order, as fractions r of h
_FRACTIONS = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}


def _inner_levels(sde: SDE, outer: list[Level], orders: Sequence[int]) -> list[list[Level]]:
    """The levels at lambda_s + r h inside every step (one vectorized inverse_lambda call)."""
    lams = [s.lam + r * (t.lam - s.lam) for s, t, k in zip(outer, outer[1:], orders) for r in _FRACTIONS[k]]
    if not lams:
        return [[] for _ in orders]
    inner = iter(levels(sde, sde.inverse_lambda(torch.tensor(lams, dtype=torch.float64))))
    return [[next(inner) for _ in _FRACTIONS[k]] for k in orders]


def dpm_solver_singlestep(
    score_fn: ScoreFn, sde: SDE, x: Tensor, ts: Tensor, *, orders: Sequence[int], generator=None, callback=None
) -> Tensor:
    """Singlestep DPM-Solver with a per-step order (1, 2 or 3); NFE = sum(orders).

    x: (B, *D) at ts[0]; ts: (N + 1,) outer grid; orders: N entries. `generator` is unused
    (the solver is deterministic). Returns x at ts[-1] with no further denoising.
    """
    check_grid(sde, ts)
    if len(orders) != len(ts) - 1 or any(k not in _FRACTIONS for k in orders):
        raise ValueError(f"orders must hold one order in (1, 2, 3) per step ({len(ts) - 1}), got {list(orders)}")
    model = NFECounter(score_fn)
    outer = levels(sde, ts)
    for i, (s, t, inner) in enumerate(zip(outer, outer[1:], _inner_levels(sde, outer, orders))):
        eps_s = noise_prediction(model, x, s)
        if orders[i] == 1:
            x = dpm_solver_1_step(x, eps_s, s, t)
        elif orders[i] == 2:
            x = dpm_solver_2_step(model, x, eps_s, s, inner[0], t)
        else:
            x = dpm_solver_3_step(model, x, eps_s, s, inner[0], inner[1], t)
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x, "nfe": model.nfe})
    return x


def dpm_solver_1(score_fn, sde, x, ts, *, generator=None, callback=None) -> Tensor:
    """DPM-Solver-1 (= DDIM) on the grid `ts`; NFE = len(ts) - 1."""
    check_grid(sde, ts)
    return dpm_solver_singlestep(score_fn, sde, x, ts, orders=[1] * (len(ts) - 1), callback=callback)


def dpm_solver_2(score_fn, sde, x, ts, *, generator=None, callback=None) -> Tensor:
    """DPM-Solver-2 (r1 = 1/2) with `ts` as outer grid; NFE = 2 (len(ts) - 1)."""
    check_grid(sde, ts)
    return dpm_solver_singlestep(score_fn, sde, x, ts, orders=[2] * (len(ts) - 1), callback=callback)


def dpm_solver_3(score_fn, sde, x, ts, *, generator=None, callback=None) -> Tensor:
    """DPM-Solver-3 (r1 = 1/3, r2 = 2/3) with `ts` as outer grid; NFE = 3 (len(ts) - 1)."""
    check_grid(sde, ts)
    return dpm_solver_singlestep(score_fn, sde, x, ts, orders=[3] * (len(ts) - 1), callback=callback)


def singlestep_orders(nfe: int, order: int = 3) -> list[int]:
    """Per-step orders that spend exactly `nfe` evaluations (the paper's DPM-Solver-fast):
    order 3: K = nfe // 3 + 1 steps, [3]*(K-2) + [2, 1] if nfe % 3 == 0, else [3]*(K-1) + [nfe % 3];
    order 2: [2]*(nfe // 2), plus [1] if nfe is odd; order 1: [1]*nfe."""
    if order not in _FRACTIONS:
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    if not isinstance(nfe, int) or nfe < order:
        raise ValueError(f"nfe must be an integer >= order ({order}), got {nfe!r}")
    k = nfe // order
    if order == 3 and nfe % 3 == 0:
        return [3] * (k - 1) + [2, 1]
    return [order] * k + ([nfe % order] if nfe % order else [])


def singlestep_plan(sde: SDE, nfe: int, order: int = 3, grid=logsnr_grid, *, device=None, dtype=None):
    """(ts, orders) for `dpm_solver_singlestep` with exactly `nfe` evaluations: the outer grid
    has one step per entry of `singlestep_orders(nfe, order)`, built by `grid(sde, K)`."""
    orders = singlestep_orders(nfe, order)
    return grid(sde, len(orders), device=device, dtype=dtype), orders


# -- DPM-Solver++ (data prediction, multistep) ------------------------------------------------
def dpm_solver_pp_1_step(x: Tensor, x0_s: Tensor, s: Level, t: Level) -> Tensor:
    """DPM-Solver++(1) = DDIM in data prediction (first step of Algorithm 2):
    x_t = (sigma_t/sigma_s) x_s - alpha_t (e^{-h} - 1) x0_s."""
    h = t.lam - s.lam
    return combine((t.sigma / s.sigma, x), (-t.alpha * math.expm1(-h), x0_s))


def dpm_solver_pp_2m_step(x: Tensor, x0_s: Tensor, x0_prev: Tensor, prev: Level, s: Level, t: Level) -> Tensor:
    """DPM-Solver++(2M), Algorithm 2: D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev with r = h_prev / h."""
    h, h_prev = t.lam - s.lam, s.lam - prev.lam
    r = h_prev / h
    phi = -t.alpha * math.expm1(-h)
    # x_t = (sigma_t/sigma_s) x_s - alpha_t (e^{-h} - 1) D, with D expanded
    return combine((t.sigma / s.sigma, x), (phi * (1.0 + 0.5 / r), x0_s), (-phi * 0.5 / r, x0_prev))


def dpm_solver_pp_2m(score_fn, sde, x, ts, *, generator=None, callback=None) -> Tensor:
    """DPM-Solver++(2M) on the grid `ts`; NFE = len(ts) - 1.

    The first step is first order (no history yet). With fewer than 15 steps the last step
    is first order too ("lower order final", diffusers' default rule): a long last step in
    lambda, as on grids uniform in t, is where the second-order extrapolation hurts most
    (on diffusers' own grid at 10 steps it cuts the endpoint error from 0.70 to 0.13;
    benchmarks/compare_public.py), and a single first-order step keeps the global order 2.
    `generator` is unused.
    """
    check_grid(sde, ts)
    model = NFECounter(score_fn)
    grid = levels(sde, ts)
    last = len(grid) - 2 if len(grid) - 1 < 15 else -1
    x0_prev = None
    for i, (s, t) in enumerate(zip(grid, grid[1:])):
        x0_s = data_prediction(model, x, s)
        if x0_prev is None or i == last:
            x = dpm_solver_pp_1_step(x, x0_s, s, t)
        else:
            x = dpm_solver_pp_2m_step(x, x0_s, x0_prev, grid[i - 1], s, t)
        x0_prev = x0_s
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x, "nfe": model.nfe})
    return x
