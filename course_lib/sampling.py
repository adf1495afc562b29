"""The library's default fast sampler: method, orders and time grid chosen from the NFE alone.

    x0 = sampling.sample(score_fn, sde, x_T, nfe=20)            # from a given prior draw
    x0 = sampling.generate(score_fn, sde, (64, 2), nfe=20, generator=g)  # draws x_T itself

Method: UniPC (Zhao et al., 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
Sampling of Diffusion Models") in data prediction, with its B(h) = expm1(h) variant (bh2), of
order 2 below 15 NFE and order 3 from 15, the last steps of lower order below 30 NFE
(`multistep.unipc`), on the grid uniform in tau^(1/2.5) (`dpm_solver.vp_time_power_grid`). The
grid's last steps are long in lambda, where extrapolating from far-away history hurts most, so
at small budgets they drop their order; from 30 NFE the steps are short and the full order's
rate wins (with an order-1 last step the global order would fall to 2). No part of it is fitted to
the model: the choice was made on the exact Gaussian-mixture models of `benchmarks/samplers.py`
(where the endpoint error against the exact probability-flow map is the solver's error alone)
and checked on mixtures held aside from that choice; that benchmark prints it beside
DPM-Solver++(2M) on the log-SNR grid, the public default of the best-known implementations.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .dpm_solver import vp_time_power_grid
from .multistep import unipc
from .sde import SDE

ScoreFn = Callable[[Tensor, Tensor], Tensor]

GRID_POWER = 2.5            # k of the grid uniform in tau^(1/k)
HIGHER_ORDER_NFE = 15       # from this NFE on, order 3; below it, order 2
LOWER_ORDER_FINAL_BELOW = 30  # below this NFE the last steps drop their order (step i of N: min(p, N - i))


def check_nfe(nfe) -> int:
    """ValueError unless nfe, a number of model evaluations, is an integer >= 1."""
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"nfe must be an integer >= 1 (model evaluations), got {nfe!r}")
    return nfe


def default_order(nfe: int) -> int:
    """The multistep order used at this budget: 2 below HIGHER_ORDER_NFE, else 3."""
    return 2 if check_nfe(nfe) < HIGHER_ORDER_NFE else 3


def default_grid(sde: SDE, nfe: int, *, device=None, dtype=None) -> Tensor:
    """The nfe + 1 times of the default sampler: `vp_time_power_grid(sde, nfe, k=2.5)`."""
    return vp_time_power_grid(sde, check_nfe(nfe), GRID_POWER, device=device, dtype=dtype)


def sample(score_fn: ScoreFn, sde: SDE, x: Tensor, *, nfe: int = 20, callback=None) -> Tensor:
    """Solve the probability-flow ODE from the prior draw x: (B, *D) at T to t = eps with
    exactly `nfe` evaluations of score_fn(x, t); deterministic, so the same x gives the same
    samples. callback gets {"i", "t", "x", "nfe"} after each step."""
    check_nfe(nfe)
    if not torch.is_tensor(x) or x.ndim < 2 or x.shape[0] < 1 or not x.is_floating_point():
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x must be a floating tensor of shape (B, *D) with B >= 1, got {shape}")
    ts = default_grid(sde, nfe, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        return unipc(score_fn, sde, x, ts, order=default_order(nfe), corrector=True, bh2=True,
                     lower_order_final=nfe < LOWER_ORDER_FINAL_BELOW, callback=callback)


def generate(score_fn: ScoreFn, sde: SDE, shape, *, nfe: int = 20, generator=None, device=None,
             dtype=None, callback=None) -> Tensor:
    """Draw x_T ~ N(0, prior_std^2 I) of `shape` (B, *D) with `generator`, then `sample` it."""
    x = sde.prior_sampling(tuple(shape), generator=generator, device=device, dtype=dtype)
    return sample(score_fn, sde, x, nfe=nfe, callback=callback)
