"""Checks for the exercises of chapter 6, the probability-flow ODE and DPM-Solver."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .. import dpm_solver
from ..distributions import GaussianMixture
from ..samplers import Level, levels, ode_reference
from ..sde import SDE, SubVPSDE, VESDE, VPSDE, probability_flow_drift
from ..utils import append_dims
from .checking import DTYPE as _DTYPE, assert_close as _assert_close, exercise_check, fail

__all__ = ["check_pf_ode_drift", "check_dpm_solver_1_step", "check_measured_order"]

# float32 cases: a few operations on numbers of order one to ten, round-off 1.2e-7, with margin
_F32_RTOL, _F32_ATOL = 1e-5, 1e-5
_SDES = (VPSDE(), SubVPSDE(), VESDE())


def _mixture(dim: int = 2, dtype=_DTYPE) -> GaussianMixture:
    """Three overlapping anisotropic components in `dim` dimensions (first two coordinates
    as in tests/test_convergence.py, the others independent with variance 0.2)."""
    covs = torch.eye(dim, dtype=_DTYPE).repeat(3, 1, 1) * 0.2
    covs[:, :2, :2] = torch.tensor([[[0.20, 0.05], [0.05, 0.10]], [[0.12, -0.04], [-0.04, 0.15]],
                                    [[0.10, 0.0], [0.0, 0.25]]], dtype=_DTYPE)
    means = torch.zeros(3, dim, dtype=_DTYPE)
    means[:, :2] = torch.tensor([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]], dtype=_DTYPE)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=_DTYPE), means, covs).to(dtype=dtype)


def _image_score(mixture: GaussianMixture, shape: tuple[int, ...], sde: SDE):
    """The mixture's exact score on image-shaped x: (B, *shape), flattened and reshaped."""
    def score_fn(x, t):
        return mixture.marginal_score(x.flatten(1), t, sde).reshape(x.shape)
    return score_fn


def _drift_cases(gen: torch.Generator):
    """(sde, score_fn, x, t, what, rtol, atol): 2-D points and 1x2x2 images, float64 and float32."""
    for sde in _SDES:
        for shape, dtype in (((2,), _DTYPE), ((1, 2, 2), _DTYPE), ((2,), torch.float32)):
            dim = math.prod(shape)
            mixture = _mixture(dim, dtype)
            x = torch.randn(8, *shape, generator=gen, dtype=_DTYPE).to(dtype)
            t = (sde.eps + (sde.T - sde.eps) * torch.rand(8, generator=gen, dtype=_DTYPE)).to(dtype)
            tol = (1e-10, 1e-10) if dtype == _DTYPE else (_F32_RTOL, _F32_ATOL)
            what = f"for {type(sde).__name__} on x of shape {(8, *shape)} in {dtype}"
            yield sde, _image_score(mixture, shape, sde), x, t, what, *tol


@exercise_check
def check_pf_ode_drift(pf_ode_drift: Callable[[SDE, Callable, Tensor, Tensor], Tensor]) -> None:
    """Exercise: `pf_ode_drift(sde, score_fn, x: (B, *D), t: (B,)) -> (B, *D)`, the velocity
    f(x, t) - g(t)^2 score(x, t) / 2 of the probability-flow ODE (Song et al., 2021, eq. 13),
    for VP, sub-VP and VE, on points and on image-shaped x."""
    gen = torch.Generator().manual_seed(0)
    for sde, score_fn, x, t, what, rtol, atol in _drift_cases(gen):
        f, score = sde.drift(x, t), score_fn(x, t)
        g = append_dims(sde.diffusion(t), x.ndim)
        expected = probability_flow_drift(sde, score_fn, x, t)
        hints = {"the score term lacks the factor 1/2: f - g^2 score is the reverse SDE's drift, "
                 "which needs its noise to keep the marginals; the ODE takes half of it": f - g**2 * score,
                 "the sign of the score term is flipped: the drift is f - g^2 score / 2": f + 0.5 * g**2 * score,
                 "it uses g instead of g^2 (sde.diffusion returns g, the noise's std rate)": f - 0.5 * g * score,
                 "it forgets the forward drift f(x, t) = sde.drift(x, t)": -0.5 * g**2 * score}
        got = pf_ode_drift(sde, score_fn, x.clone(), t.clone())
        _assert_close("pf_ode_drift", got, expected, what, rtol=rtol, atol=atol, hints=hints)
    print("Correct: pf_ode_drift = f - g^2 score / 2 for VP, sub-VP and VE, on points and images.")


def _step_cases(gen: torch.Generator):
    """(x, x0, s, t, what): Levels from a VP and a VE grid, 2-D points and image-shaped x."""
    for sde in (VPSDE(), VESDE()):
        grid = levels(sde, dpm_solver.logsnr_grid(sde, 6, dtype=_DTYPE))
        for i, shape in ((0, (2,)), (3, (1, 3, 3)), (5, (2,))):  # the first, a middle and the last step
            s, t = grid[i], grid[i + 1]
            x = (s.sigma + s.alpha) * torch.randn(5, *shape, generator=gen, dtype=_DTYPE)
            x0 = torch.randn(5, *shape, generator=gen, dtype=_DTYPE)
            yield x, x0, s, t, f"for {type(sde).__name__} from t = {s.t:.4g} to {t.t:.4g}, x of shape {(5, *shape)}"


@exercise_check
def check_dpm_solver_1_step(dpm_solver_1_step: Callable[[Tensor, Tensor, Level, Level], Tensor]) -> None:
    """Exercise: `dpm_solver_1_step(x_s: (B, *D), x0_s: (B, *D), s: Level, t: Level) -> x_t`,
    DPM-Solver-1 (= DDIM) in the data-prediction form of DPM-Solver++,
    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0_s with h = lambda_t - lambda_s > 0."""
    gen = torch.Generator().manual_seed(1)
    for x, x0, s, t, what in _step_cases(gen):
        h = t.lam - s.lam
        expected = dpm_solver.dpm_solver_pp_1_step(x, x0, s, t)
        ratio = t.sigma / s.sigma
        hints = {"the data term's sign is flipped: -alpha_t (e^{-h} - 1) = alpha_t (1 - e^{-h}) > 0":
                     ratio * x + t.alpha * math.expm1(-h) * x0,
                 "it uses e^{h} - 1 where the data prediction needs e^{-h} - 1 (or h has the wrong sign: "
                 "h = lambda_t - lambda_s > 0 when t is the less noisy time)": ratio * x - t.alpha * math.expm1(h) * x0,
                 "it takes the linear factor alpha_t / alpha_s of the noise-prediction form; with the data "
                 "prediction the exact linear part is sigma_t / sigma_s": t.alpha / s.alpha * x - t.alpha * math.expm1(-h) * x0,
                 "it uses the full log-SNR (2 lambda): lambda = log alpha - log sigma is half of it":
                     ratio * x - t.alpha * math.expm1(-2 * h) * x0,
                 "it multiplies the data term by sigma_t instead of alpha_t": ratio * x - t.sigma * math.expm1(-h) * x0}
        got = dpm_solver_1_step(x.clone(), x0.clone(), s, t)
        _assert_close("dpm_solver_1_step", got, expected, what, hints=hints)
    print("Correct: dpm_solver_1_step is DDIM in data prediction (VP and VE, first to last step).")


def _rms(a: Tensor, b: Tensor) -> float:
    return float((a - b).flatten(1).pow(2).sum(1).mean().sqrt())


@exercise_check
def check_measured_order(measured_order: Callable) -> None:
    """Exercise: `measured_order(sampler, score_fn, sde, x, x_ref, n) -> float`, the order
    log2(e_n / e_2n) from the RMS endpoint errors e_n, e_2n of `sampler` on
    `dpm_solver.logsnr_grid(sde, n)` and on the grid with 2 n steps, against x_ref.
    Checked on DDIM, DPM-Solver-2 and DPM-Solver++(2M) (orders 1, 2, 2) against the same
    computation, on an exact mixture score (VP SDE)."""
    sde = VPSDE()
    mixture = _mixture()
    score_fn = mixture.score_fn(sde)
    x = sde.prior_sampling((16, 2), generator=torch.Generator().manual_seed(2), dtype=_DTYPE)
    x_ref = ode_reference(score_fn, sde, x)
    cases = ((dpm_solver.dpm_solver_1, 48, 1), (dpm_solver.dpm_solver_2, 24, 2), (dpm_solver.dpm_solver_pp_2m, 48, 2))
    found = []
    for sampler, n, order in cases:
        e_n, e_2n = (_rms(sampler(score_fn, sde, x, dpm_solver.logsnr_grid(sde, m, dtype=_DTYPE)), x_ref)
                     for m in (n, 2 * n))
        expected = math.log2(e_n / e_2n)
        got = measured_order(sampler, score_fn, sde, x.clone(), x_ref.clone(), n)
        if isinstance(got, Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or not math.isfinite(got):
            fail(f"measured_order must return a finite float, got {got!r}")
        hints = {"it takes the natural log of the error ratio: divide by log 2 (the NFE doubled)": math.log(e_n / e_2n),
                 "the ratio is upside down: the error falls as the grid is refined, so e_n / e_2n > 1": -expected,
                 "it compares mean squared errors, which fall as h^(2p): take the root (RMS)": 2 * expected,
                 "both runs used the same grid: the second must have 2 n steps": 0.0}
        what = f"for {sampler.__name__} with n = {n} (order {order})"
        if abs(got - expected) <= 1e-6 * abs(expected):
            found.append(got)
            continue
        for diagnosis, wrong in hints.items():
            if abs(got - wrong) <= 1e-6 * max(abs(wrong), 1e-3):
                fail(f"measured_order is wrong {what}: {diagnosis}")
        fail(f"measured_order returned {got:.4f} {what}; log2(e_n / e_2n) of the RMS errors is {expected:.4f}")
    # the Correct line fits the book's code column (88 characters)
    print("Correct: orders {:.2f}, {:.2f} and {:.2f} for DDIM, DPM-Solver-2 and ++(2M) "
          "(theory 1, 2, 2).".format(*found))
