"""Error against NFE: how a probability-flow solver's endpoint error shrinks as it spends more
network evaluations, and the order of convergence measured from it.

On a model with an exact score (a Gaussian mixture, `distributions.GaussianMixture.score_fn`)
and a tight reference solution of the same ODE from the same prior draws
(`samplers.ode_reference`), the endpoint error is the solver's discretization error alone. A
solver of order p on a grid of step h has global error C h^p (1 + O(h)), so with NFE
proportional to 1 / h the error falls as NFE^-p: p is minus the slope of log error against
log NFE, fitted over the asymptotic range where the O(h) term has faded.

A study is a list of `Solver` entries, each `run(score_fn, sde, x, budget) -> (x at eps, NFE)`;
adding a sampler to a figure is adding one entry. `on_grid` makes the entry of a fixed-grid
sampler (`sampler(score_fn, sde, x, ts)`), `singlestep` the one of DPM-Solver's mixed-order
plan, `adaptive` the one of RK45, whose budget is a tolerance.

Shapes: x, x_ref: (B, *D); errors are floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from . import dpm_solver
from .samplers import ode_rk45

Run = Callable[..., tuple[Tensor, int]]


@dataclass(frozen=True)
class Solver:
    """One curve of an error-against-NFE study."""

    name: str                  # legend and table label
    run: Run                   # run(score_fn, sde, x, budget) -> (x at eps: (B, *D), NFE spent)
    budgets: tuple             # what `run` is given: NFEs (fixed grids) or tolerances (adaptive)
    order: float | None        # the theoretical order; None where there is none (adaptive step size)
    fit_from: int = 0          # smallest NFE of the asymptotic range the order is fitted on


def on_grid(sampler, grid=dpm_solver.logsnr_grid, evals_per_step: int = 1) -> Run:
    """`run` for `sampler(score_fn, sde, x, ts)` on `grid(sde, n)` with n = nfe // evals_per_step
    steps (Heun and DPM-Solver-k spend k evaluations per step): NFE = n * evals_per_step."""
    if not isinstance(evals_per_step, int) or evals_per_step < 1:
        raise ValueError(f"evals_per_step must be an integer >= 1, got {evals_per_step!r}")

    def run(score_fn, sde, x, nfe):
        n = int(nfe) // evals_per_step
        if n < 1:
            raise ValueError(f"nfe must be at least evals_per_step = {evals_per_step}, got {nfe!r}")
        return sampler(score_fn, sde, x, grid(sde, n, device=x.device, dtype=x.dtype)), n * evals_per_step

    return run


def singlestep(order: int = 3, grid=dpm_solver.logsnr_grid) -> Run:
    """`run` for singlestep DPM-Solver with `dpm_solver.singlestep_plan`: exactly `nfe` evaluations
    in steps of `order` (the last ones lower), as the paper's DPM-Solver-fast."""

    def run(score_fn, sde, x, nfe):
        ts, orders = dpm_solver.singlestep_plan(sde, int(nfe), order, grid, device=x.device, dtype=x.dtype)
        return dpm_solver.dpm_solver_singlestep(score_fn, sde, x, ts, orders=orders), int(nfe)

    return run


def adaptive(method: str = "RK45") -> Run:
    """`run` for scipy's adaptive solver `method` with rtol = atol = the budget (a tolerance):
    the NFE is whatever the step-size control spends (`samplers.ode_rk45`)."""

    def run(score_fn, sde, x, tol):
        return ode_rk45(score_fn, sde, x, rtol=float(tol), atol=float(tol), method=method)

    return run


def endpoint_error(x: Tensor, x_ref: Tensor) -> float:
    """RMS over the batch of the Euclidean distance to the reference, sqrt(mean_b |x_b - x_ref_b|^2)."""
    if x.shape != x_ref.shape:
        raise ValueError(f"x and x_ref must have the same shape, got {tuple(x.shape)} and {tuple(x_ref.shape)}")
    diff = (x.to(torch.float64) - x_ref.to(torch.float64)).flatten(1)
    return float(diff.pow(2).sum(1).mean().sqrt())


def fitted_order(nfes: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of -log(error) against log(NFE): the measured order of convergence."""
    if len(nfes) != len(errors) or len(nfes) < 2:
        raise ValueError(f"nfes and errors must have the same length >= 2, got {len(nfes)} and {len(errors)}")
    if min(nfes) <= 0 or min(errors) <= 0 or len(set(nfes)) < 2:
        raise ValueError("nfes and errors must be positive, with at least two distinct NFEs")
    u = torch.tensor([math.log(n) for n in nfes], dtype=torch.float64)
    v = torch.tensor([math.log(e) for e in errors], dtype=torch.float64)
    u, v = u - u.mean(), v - v.mean()
    return float(-(u * v).sum() / (u * u).sum())


def local_orders(nfes: Sequence[float], errors: Sequence[float]) -> list[float]:
    """The slope between each pair of consecutive points, log(e_i / e_{i+1}) / log(n_{i+1} / n_i):
    it drifts towards the order as the O(h) correction fades."""
    return [fitted_order(nfes[i:i + 2], errors[i:i + 2]) for i in range(len(nfes) - 1)]


@dataclass(frozen=True)
class Curve:
    """A solver's measured curve: NFE spent and endpoint error at each budget."""

    nfes: tuple[int, ...]
    errors: tuple[float, ...]

    def asymptotic(self, fit_from: int) -> tuple[list[int], list[float]]:
        """The points with NFE >= fit_from."""
        pairs = [(n, e) for n, e in zip(self.nfes, self.errors) if n >= fit_from]
        return [n for n, _ in pairs], [e for _, e in pairs]


@torch.no_grad()
def error_vs_nfe(solvers: Sequence[Solver], score_fn, sde, x: Tensor, x_ref: Tensor) -> dict[str, Curve]:
    """Run every solver at every one of its budgets from the prior draws x: (B, *D) and measure
    `endpoint_error` against x_ref (the reference solution from the same x). Returns name -> Curve."""
    curves = {}
    for solver in solvers:
        runs = [solver.run(score_fn, sde, x, budget) for budget in solver.budgets]
        curves[solver.name] = Curve(tuple(int(nfe) for _, nfe in runs),
                                    tuple(endpoint_error(out, x_ref) for out, _ in runs))
    return curves


def measured_order(solver: Solver, curve: Curve) -> float:
    """`fitted_order` over the curve's points with NFE >= solver.fit_from."""
    return fitted_order(*curve.asymptotic(solver.fit_from))
