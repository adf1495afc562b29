"""Checks for the exercises of chapter 5, stochastic differential equations."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..distributions import GaussianMixture
from ..sde import SDE, VESDE, VPSDE, SubVPSDE
from ..utils import append_dims
from .checking import DTYPE as _DTYPE, assert_close as _assert_close, exercise_check, fail

__all__ = ["check_vp_kernel", "check_reverse_em_step", "check_guided_score"]

# float32 cases: a few elementwise operations on numbers of order one, round-off ~1e-7, with margin
_F32_RTOL, _F32_ATOL = 1e-5, 1e-6


def _times(n: int, gen: torch.Generator, low: float = 1e-3, high: float = 1.0) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=_DTYPE)


# -- exercise 1: the VP perturbation kernel ------------------------------------------------------
def _vp_cases(gen: torch.Generator):
    """(x0, t, beta_min, beta_max, what, rtol, atol): fixed times (t = 0 included, where the
    kernel is the identity), random ones, another schedule, images, one sample, float32."""
    yield (torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]], dtype=_DTYPE),
           torch.tensor([0.0, 0.5, 1.0], dtype=_DTYPE), 0.1, 20.0, "at t = 0, 0.5, 1 (defaults)", 1e-7, 1e-9)
    for shape, (b0, b1), dtype in (((64, 2), (0.1, 20.0), _DTYPE), ((64, 3), (0.5, 5.0), _DTYPE),
                                   ((8, 1, 4, 4), (0.1, 20.0), _DTYPE), ((1, 2), (1.0, 2.0), _DTYPE),
                                   ((64, 2), (0.1, 20.0), torch.float32)):
        x0 = (2 * torch.randn(shape, generator=gen, dtype=_DTYPE)).to(dtype)
        # float32: t >= 0.05 keeps sigma >= 0.17, where sqrt(1 - alpha^2) loses only ~2e-7 to round-off
        t = _times(shape[0], gen, 0.0 if dtype == _DTYPE else 0.05).to(dtype)
        tol = (1e-7, 1e-9) if dtype == _DTYPE else (_F32_RTOL, _F32_ATOL)
        yield x0, t, b0, b1, f"for x0 of shape {tuple(shape)}, beta in [{b0}, {b1}], {dtype}", *tol


def _vp_hints(x0: Tensor, t: Tensor, b0: float, b1: float, part: str) -> dict[str, Tensor]:
    """The answers of the typical mistakes, for the mean ("mean") or the std ("std")."""
    integral = b0 * t + 0.5 * (b1 - b0) * t**2  # int_0^t beta(s) ds
    alpha = torch.exp(-0.5 * integral)
    wrong_alphas = {
        "alpha(t) = exp(-int_0^t beta) lacks the 1/2: the mean coefficient is exp(-(1/2) int_0^t beta(s) ds)":
            torch.exp(-integral),
        # also what beta(t) t gives, as if beta were constant
        "int_0^t beta(s) ds = beta_min t + (beta_max - beta_min) t^2 / 2: the 1/2 of the t^2 term is missing":
            torch.exp(-0.5 * (b0 * t + (b1 - b0) * t**2)),
    }
    if part == "mean":
        hints = {d: append_dims(a, x0.ndim) * x0 for d, a in wrong_alphas.items()}
        hints["the mean shrinks: it is alpha(t) x0, not x0 (that is the VE SDE's mean)"] = x0.clone()
        return hints
    hints = {d: torch.sqrt(1 - a**2) for d, a in wrong_alphas.items()}
    hints.update({
        "std is the square root of the variance 1 - alpha(t)^2 (1 - alpha^2 is the variance, "
        "and also the sub-VP SDE's std)": 1 - alpha**2,
        "the variance is 1 - alpha(t)^2, not 1 - alpha(t): the std is sqrt(1 - alpha^2)": torch.sqrt(1 - alpha),
    })
    return hints


@exercise_check
def check_vp_kernel(vp_kernel: Callable) -> None:
    """Exercise: `vp_kernel(x0: (B, *D), t: (B,), beta_min, beta_max) -> (mean: (B, *D), std: (B,))`,
    the perturbation kernel N(alpha(t) x0, sigma(t)^2 I) of the VP SDE with the linear schedule
    beta(t) = beta_min + t (beta_max - beta_min)."""
    gen = torch.Generator().manual_seed(0)
    for x0, t, b0, b1, what, rtol, atol in _vp_cases(gen):
        got = vp_kernel(x0.clone(), t.clone(), b0, b1)
        if not (isinstance(got, tuple) and len(got) == 2):
            fail(f"vp_kernel must return a tuple (mean, std), got {type(got).__name__}")
        sde = VPSDE(b0, b1)
        mean, std = (v.to(x0.dtype) for v in sde.marginal_prob(x0.double(), t.double()))
        x0d, td = x0.double(), t.double()
        _assert_close("vp_kernel's mean", got[0], mean, what, rtol=rtol, atol=atol,
                      hints=_vp_hints(x0d, td, b0, b1, "mean"))
        _assert_close("vp_kernel's std", got[1], std, what, rtol=rtol, atol=atol,
                      hints=_vp_hints(x0d, td, b0, b1, "std"))
    print("Correct: vp_kernel gives alpha(t) x0 and sigma(t) = sqrt(1 - alpha(t)^2), for 2-D points "
          "and images, two schedules, float64 and float32.")


# -- exercise 2: one reverse Euler-Maruyama step ------------------------------------------------
def _em_cases(gen: torch.Generator):
    """(sde, score_fn, x, t, dt, z, what): the exact score of a mixture under VP, VE and sub-VP,
    a linear score on images, one sample."""
    mixture = GaussianMixture(torch.tensor([0.4, 0.6], dtype=_DTYPE),
                              torch.tensor([[-1.0, 0.5], [1.5, -1.0]], dtype=_DTYPE),
                              torch.tensor([[[0.5, 0.1], [0.1, 0.3]], [[0.2, 0.0], [0.0, 0.6]]], dtype=_DTYPE))
    for sde, name in ((VPSDE(), "VP"), (VESDE(sigma_max=20.0), "VE"), (SubVPSDE(), "sub-VP")):
        x = 2 * torch.randn(32, 2, generator=gen, dtype=_DTYPE)
        yield sde, mixture.score_fn(sde), x, _times(32, gen, 0.05), 0.01, torch.randn_like(x), f"under the {name} SDE"
    x = torch.randn(4, 1, 3, 3, generator=gen, dtype=_DTYPE)
    yield (VPSDE(), lambda y, t: -y / append_dims(VPSDE().marginal_std(t), y.ndim) ** 2, x, _times(4, gen, 0.1),
           0.02, torch.randn_like(x), "for images x of shape (4, 1, 3, 3) (use append_dims)")
    x = torch.randn(1, 2, generator=gen, dtype=_DTYPE)
    yield VPSDE(), mixture.score_fn(VPSDE()), x, _times(1, gen, 0.5), 0.1, torch.randn_like(x), "for one sample"


def _em_answers(sde: SDE, score_fn, x: Tensor, t: Tensor, dt: float, z: Tensor) -> tuple[Tensor, dict]:
    """The reference step and the answers of the typical mistakes."""
    f, g = sde.drift(x, t), append_dims(sde.diffusion(t), x.ndim)
    s = score_fn(x, t)
    noise = g * dt**0.5 * z
    expected = x - (f - g**2 * s) * dt + noise
    hints = {
        "the score term has the wrong sign: the reverse drift is f - g^2 score": x - (f + g**2 * s) * dt + noise,
        "time runs backward: x_{t - dt} = x_t - [f - g^2 score] dt + g sqrt(dt) z (the drift is subtracted)":
            x + (f - g**2 * s) * dt + noise,
        "the noise is g(t) sqrt(dt) z: Brownian increments have variance dt, not dt^2":
            x - (f - g**2 * s) * dt + g * dt * z,
        "the score is multiplied by g(t)^2, not g(t)": x - (f - g * s) * dt + noise,
        "f - g^2 score / 2 is the probability-flow ODE's drift: the reverse SDE's is f - g^2 score":
            x - (f - 0.5 * g**2 * s) * dt + noise,
        "the noise term g(t) sqrt(dt) z is missing": x - (f - g**2 * s) * dt,
        "the forward drift f(x, t) is missing (it is zero only for VE)": x + g**2 * s * dt + noise,
    }
    return expected, hints


@exercise_check
def check_reverse_em_step(reverse_em_step: Callable) -> None:
    """Exercise: `reverse_em_step(sde, score_fn, x: (B, *D), t: (B,), dt: float, z: (B, *D))`
    -> x at t - dt, one Euler-Maruyama step of Anderson's reverse SDE with the given noise z."""
    gen = torch.Generator().manual_seed(1)
    for sde, score_fn, x, t, dt, z, what in _em_cases(gen):
        expected, hints = _em_answers(sde, score_fn, x, t, dt, z)
        got = reverse_em_step(sde, score_fn, x.clone(), t.clone(), dt, z.clone())
        # VE's g(t)^2 reaches ~10^3: relative round-off on terms of that size
        _assert_close("reverse_em_step", got, expected, what, rtol=1e-7, atol=1e-8, hints=hints)
    print("Correct: reverse_em_step is x - [f - g^2 score] dt + g sqrt(dt) z under VP, VE and sub-VP, "
          "on points and images.")


# -- exercise 3: a guided score -----------------------------------------------------------------
def _component(mixture: GaussianMixture, y: int) -> GaussianMixture:
    return GaussianMixture(torch.ones(1, dtype=mixture.means.dtype), mixture.means[y:y + 1], mixture.covs[y:y + 1])


def _guidance_answers(mixture, sde, x, t, y, scale) -> tuple[Tensor, dict]:
    """The guided score s_t + scale (s_{t, y} - s_t), and the answers of the typical mistakes."""
    s, s_y = mixture.marginal_score(x, t, sde), _component(mixture, y).marginal_score(x, t, sde)
    s_clean, s_y_clean = mixture.score(x), _component(mixture, y).score(x)
    expected = s + scale * (s_y - s)
    hints = {
        "the classifier must be the noisy p_t(y | x) at the sample's time t, not the clean p_0(y | x)":
            s + scale * (s_y_clean - s_clean),
        "the scale multiplies only grad log p_t(y | x), not the unconditional score too": scale * s_y,
        "Bayes' rule adds grad log p_t(y | x) to the score (you subtracted it)": s - scale * (s_y - s),
        "the unconditional score s_t(x) is missing: guided = s_t(x) + scale * grad log p_t(y | x)":
            scale * (s_y - s),
        "grad log p_t(y | x) = grad log p_t(x | y) - grad log p_t(x): you added the class's score "
        "p_t(x | y) itself": s + scale * s_y,
    }
    return expected, hints


@exercise_check
def check_guided_score(guided_score: Callable) -> None:
    """Exercise: `guided_score(mixture, sde, x: (B, D), t: (B,), y: int, scale: float) -> (B, D)`,
    the classifier-guided score s_t(x) + scale grad_x log p_t(y | x) of a labelled Gaussian
    mixture whose class y is its component y, so p_t(y | x) is the responsibility of y at time t."""
    gen = torch.Generator().manual_seed(2)
    mixture = GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=_DTYPE),
                              torch.tensor([[-1.5, 0.0], [1.5, 0.0], [0.0, 1.8]], dtype=_DTYPE),
                              torch.tensor([[[0.6, 0.2], [0.2, 0.4]], [[0.3, 0.0], [0.0, 0.8]],
                                            [[0.5, -0.1], [-0.1, 0.3]]], dtype=_DTYPE))
    cases = [(VPSDE(), "VP", 1, 1.0), (VPSDE(), "VP", 2, 3.0), (VESDE(sigma_max=20.0), "VE", 0, 2.0),
             (VPSDE(), "VP", 0, 0.0)]
    for sde, name, y, scale in cases:
        x = 2 * torch.randn(48, 2, generator=gen, dtype=_DTYPE)
        t = _times(48, gen, 0.01, 0.6)
        expected, hints = _guidance_answers(mixture, sde, x, t, y, scale)
        if scale in (0.0, 1.0):  # these coincide with the answer or another hint there
            hints = {d: h for d, h in hints.items() if not torch.allclose(h, expected)}
        got = guided_score(mixture, sde, x.clone(), t.clone(), y, scale)
        what = f"for class y = {y}, scale {scale:g}, under the {name} SDE"
        _assert_close("guided_score", got, expected, what, rtol=1e-7, atol=1e-8, hints=hints)
        if got.requires_grad:
            fail("guided_score should return a tensor detached from the graph (.detach())")
    print("Correct: guided_score = s_t(x) + scale * grad log p_t(y | x), for scales 0, 1, 2, 3, VP and VE.")
