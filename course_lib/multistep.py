"""Higher-order multistep solvers in data prediction: DPM-Solver++(3M) (Lu et al., 2022) and
UniPC (Zhao et al., 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models").

From time s to time t (h = lambda_t - lambda_s > 0) the exact data-prediction solution is

    x_t = (sigma_t / sigma_s) x_s + alpha_t [(1 - e^{-h}) x0_s + sum_{j>=1} h^{j+1} phi_{j+1}(-h) x0^{(j)}(lambda_s)],

with x0^{(j)} the j-th lambda-derivative of the data prediction and
phi_k(z) = int_0^1 e^{(1-u) z} u^{k-1} / (k-1)! du. A multistep method replaces the sum by
sum_k w_k (x0_k - x0_s) over earlier points lambda_k = lambda_s + r_k h; matching the Taylor
terms j = 1..q gives the linear system sum_k w_k r_k^j = j! h phi_{j+1}(-h) (the quadrature of
the interpolating polynomial, of order q + 1). UniP-p uses the p - 1 latest earlier points:
this is DPM-Solver++(pM), with weights that integrate the interpolant exactly instead of
DPM-Solver++'s finite-difference coefficients (they differ by higher-order terms, so the order
is the same). The corrector UniC-p adds the point r = 1 at the new time, whose model
evaluation the next step needs anyway, so the order rises to p + 1 at no extra NFE.

With few steps the grid matters as much as the order: `density_grid` spreads the steps in
lambda with an adjustable density and `fit_grid` fits that density to a model on calibration
draws (benchmarks/samplers.py: UniPC-3 on a fitted grid is the library's most accurate
deterministic sampler at NFE <= 50).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .dpm_solver import check_steps, dpm_solver_pp_2m_step, pin_ends
from .samplers import Level, NFECounter, check_grid, combine, data_prediction, levels
from .sde import SDE


_INV_FACTORIAL = tuple(1.0 / math.factorial(j) for j in range(32))


def phi(k: int, z: float) -> float:
    """phi_k(z) = sum_j z^j / (j + k)!, summed by Horner's rule for |z| < 1 (no cancellation;
    20 terms leave < 1e-18), else by the recursion phi_k = (phi_{k-1} - 1/(k-1)!) / z, phi_0 = e^z."""
    if abs(z) < 1.0:
        value = 0.0
        for j in reversed(range(20)):
            value = value * z + _INV_FACTORIAL[j + k]
        return value
    value = math.exp(z)
    for m in range(1, k + 1):
        value = (value - _INV_FACTORIAL[m - 1]) / z
    return value


def multistep_weights(rs: list[float], h: float) -> list[float]:
    """Weights w_k solving sum_k w_k r_k^j = j! h phi_{j+1}(-h), j = 1..len(rs), in float64
    (Gaussian elimination with partial pivoting on this <= 3 x 3 system, in plain Python)."""
    q = len(rs)
    rows = [[r**j for r in rs] + [math.factorial(j) * h * phi(j + 1, -h)] for j in range(1, q + 1)]
    for col in range(q):
        pivot = max(range(col, q), key=lambda i: abs(rows[i][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for i in range(col + 1, q):
            f = rows[i][col] / rows[col][col]
            rows[i] = [a - f * b for a, b in zip(rows[i], rows[col])]
    w = [0.0] * q
    for i in reversed(range(q)):
        w[i] = (rows[i][q] - sum(rows[i][k] * w[k] for k in range(i + 1, q))) / rows[i][i]
    return w


def multistep_update(x: Tensor, x0_s: Tensor, s: Level, t: Level, points: list[tuple[Level, Tensor]]) -> Tensor:
    """x_t = (sigma_t/sigma_s) x_s + alpha_t [(1 - e^{-h}) x0_s + sum_k w_k (x0_k - x0_s)], for
    `points` the (level, x0) pairs at lambda_k = lambda_s + r_k h."""
    h = t.lam - s.lam
    w = multistep_weights([(p.lam - s.lam) / h for p, _ in points], h) if points else []
    coef_s = -t.alpha * (math.expm1(-h) + sum(w))
    history = [(t.alpha * w_k, x0_k) for w_k, (_, x0_k) in zip(w, points)]
    return combine((t.sigma / s.sigma, x), (coef_s, x0_s), *history)


def unipc(score_fn, sde, x, ts, *, order: int = 3, corrector: bool = True, bh2: bool = False,
          lower_order_final: bool = False, generator=None, callback=None) -> Tensor:
    """UniPC-p on the grid `ts`: predictor UniP-p (DPM-Solver++(pM)) and, when `corrector`,
    UniC-p at every step but the last (which would cost one more evaluation); NFE = len(ts) - 1.

    The multistep weights solve the order conditions with the exact phi-functions
    (`multistep_weights`), so UniPC's free function B(h) cancels wherever the system is square.
    With `bh2`, the two places where the reference code fixes a coefficient instead follow its
    B(h) = expm1(h) variant ("bh2"): the order-2 predictor uses rho = 1/2, which is exactly
    DPM-Solver++(2M)'s update, and the order-1 corrector uses rho_c = 1/2. With
    `lower_order_final`, step i of N uses order min(p, N - i): the last steps, often the longest
    in lambda, do not extrapolate from far-away history (diffusers' `lower_order_final`).

    x: (B, *D) at ts[0]; ts: (N + 1,) strictly decreasing in [eps, T]; order in (1, 2, 3).
    The first steps use the history available (orders 1, 2, ...). `generator` is unused.
    """
    check_grid(sde, ts)
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    model = NFECounter(score_fn)
    grid = levels(sde, ts)
    n = len(grid) - 1
    history = [(grid[0], data_prediction(model, x, grid[0]))]
    for i, t in enumerate(grid[1:]):
        s, x0_s = history[-1]
        p = min(order, len(history), n - i) if lower_order_final else min(order, len(history))
        past = history[len(history) - p:-1]
        x_pred = _predict(x, x0_s, s, t, past, bh2)
        if i == n - 1:
            x = x_pred
        else:
            x0_t = data_prediction(model, x_pred, t)
            x = _correct(x, x0_s, s, t, past, x0_t, bh2) if corrector else x_pred
            history = (history + [(t, x0_t)])[-order:]
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x, "nfe": model.nfe})
    return x


def _predict(x: Tensor, x0_s: Tensor, s: Level, t: Level, past: list, bh2: bool) -> Tensor:
    """UniP with the earlier points `past`; bh2 at order 2 is DPM-Solver++(2M)'s step."""
    if bh2 and len(past) == 1:
        (prev, x0_prev), = past
        return dpm_solver_pp_2m_step(x, x0_s, x0_prev, prev, s, t)
    return multistep_update(x, x0_s, s, t, past)


def _correct(x: Tensor, x0_s: Tensor, s: Level, t: Level, past: list, x0_t: Tensor, bh2: bool) -> Tensor:
    """UniC with `past` and the new point (t, x0_t); bh2 at order 1 is the trapezoid
    x_t = (sigma_t/sigma_s) x_s - alpha_t expm1(-h) (x0_s + x0_t) / 2 (rho_c = 1/2)."""
    if bh2 and not past:
        phi = -t.alpha * math.expm1(-(t.lam - s.lam))
        return combine((t.sigma / s.sigma, x), (0.5 * phi, x0_s), (0.5 * phi, x0_t))
    return multistep_update(x, x0_s, s, t, past + [(t, x0_t)])


def dpm_solver_pp_3m(score_fn, sde, x, ts, *, generator=None, callback=None) -> Tensor:
    """DPM-Solver++(3M): the third-order multistep predictor alone (the exact-phi weights of
    `multistep_weights`, not the reference code's finite differences); NFE = len(ts) - 1."""
    return unipc(score_fn, sde, x, ts, order=3, corrector=False, callback=callback)


def unipc_3(score_fn, sde, x, ts, *, generator=None, callback=None) -> Tensor:
    """UniPC-3 (UniP-3 + UniC-3, order 4 away from the start); NFE = len(ts) - 1."""
    return unipc(score_fn, sde, x, ts, order=3, corrector=True, callback=callback)


# -- a time grid fitted to the model -----------------------------------------------------------
def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x, xp strictly increasing."""
    i = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    return fp[i - 1] + (fp[i] - fp[i - 1]) * (x - xp[i - 1]) / (xp[i] - xp[i - 1])


def density_grid(sde: SDE, n: int, log_density: Tensor, *, device=None, dtype=None) -> Tensor:
    """n + 1 times from T to eps whose points in u = (lambda - lambda_T) / (lambda_eps - lambda_T)
    have density proportional to exp(log_density(u)), piecewise linear through m knots evenly
    spaced on [0, 1] (log_density: (m,), m >= 2). All-equal knots give `logsnr_grid`; knots
    more than 20 below the largest are raised to it (density ratios up to e^20 keep the
    cumulative density strictly increasing in float64)."""
    check_steps(n)
    knots = torch.as_tensor(log_density, dtype=torch.float64).detach().cpu()
    if knots.ndim != 1 or len(knots) < 2 or not bool(torch.isfinite(knots).all()):
        raise ValueError(f"log_density must be a 1-D tensor of >= 2 finite knot values, got {knots}")
    u = torch.linspace(0.0, 1.0, 4097, dtype=torch.float64)
    knots = (knots - knots.max()).clamp(min=-20.0)
    density = _interp(u, torch.linspace(0.0, 1.0, len(knots), dtype=torch.float64), knots).exp()
    cdf = torch.cat([u[:1], torch.cumulative_trapezoid(density, u)])
    u_grid = _interp(torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64), cdf / cdf[-1], u)
    lam_T, lam_eps = sde.marginal_lambda(torch.tensor([sde.T, sde.eps], dtype=torch.float64)).tolist()
    return pin_ends(sde.inverse_lambda(lam_T + u_grid * (lam_eps - lam_T)), sde, device=device, dtype=dtype)


class GridFit(NamedTuple):
    """What `fit_grid` found, judged on held-out draws."""

    knots: Tensor        # (n_knots,) float64 for `density_grid`; all zeros (the logSNR grid) unless fitting helped
    start_error: float   # held-out RMS endpoint error on the starting logSNR grid
    fitted_error: float  # held-out RMS endpoint error on the fitted grid (whether or not it is returned)

    @property
    def helped(self) -> bool:
        return self.fitted_error < self.start_error


def _rms_error(sampler, score_fn, sde, x, x_ref, n, knots) -> float:
    ts = density_grid(sde, n, torch.as_tensor(knots), device=x.device, dtype=x.dtype)
    return float((sampler(score_fn, sde, x, ts) - x_ref).flatten(1).pow(2).sum(1).mean().sqrt())


@torch.no_grad()
def fit_grid(sampler, score_fn, sde: SDE, x: Tensor, x_ref: Tensor, n: int, *, x_heldout: Tensor | None = None,
             ref_heldout: Tensor | None = None, n_knots: int = 8, max_evals: int = 400) -> GridFit:
    """Knots of `density_grid` that minimize the RMS endpoint error of `sampler` with n steps,
    sqrt(mean_b |sampler(x)_b - x_ref_b|^2), by Nelder-Mead from the logSNR grid (all zeros);
    in the spirit of "Align Your Steps" (Sabour et al., 2024), which fits the grid to the model.

    x: (B, *D) calibration draws at T; x_ref: their exact endpoints at eps (e.g.
    `samplers.ode_reference`). The fit is judged on held-out draws (x_heldout, ref_heldout), by
    default the second half of x: when it does not lower the held-out error of the starting grid,
    the starting grid is returned, so a fitted grid never does harm on data like the held-out.
    """
    from scipy.optimize import minimize

    if (x_heldout is None) != (ref_heldout is None):
        raise ValueError("give both x_heldout and ref_heldout, or neither")
    if x_heldout is None:
        if x.shape[0] < 2:
            raise ValueError(f"x must hold at least 2 draws to split off held-out ones, got {x.shape[0]}")
        half = x.shape[0] // 2
        x, x_ref, x_heldout, ref_heldout = x[:half], x_ref[:half], x[half:], x_ref[half:]

    def log_error(knots) -> float:
        error = _rms_error(sampler, score_fn, sde, x, x_ref, n, knots)
        return 2 * math.log(error) if math.isfinite(error) and error > 0 else math.inf

    start = np.zeros(n_knots)
    simplex = np.vstack([start, np.eye(n_knots)])  # unit moves of each knot: a factor e in density
    options = {"maxfev": max_evals, "xatol": 1e-2, "fatol": 1e-3, "initial_simplex": simplex}
    knots = torch.as_tensor(minimize(log_error, start, method="Nelder-Mead", options=options).x, dtype=torch.float64)
    start_error = _rms_error(sampler, score_fn, sde, x_heldout, ref_heldout, n, torch.zeros(n_knots, dtype=torch.float64))
    fitted_error = _rms_error(sampler, score_fn, sde, x_heldout, ref_heldout, n, knots)
    best = knots if fitted_error < start_error else torch.zeros(n_knots, dtype=torch.float64)
    return GridFit(best, start_error, fitted_error)
