"""Checks for the exercises of chapter 4, noise-conditional score networks.

The course's Langevin convention throughout: x <- x + (alpha / 2) score + sqrt(alpha) z, and
annealed Langevin's step at level sigma_i is alpha_i = eps sigma_i^2 / sigma_L^2 (Song & Ermon,
2019, Algorithm 1).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..sde import VESDE
from ..utils import append_dims
from .checking import DTYPE as _DTYPE, assert_close as _assert_close, exercise_check, fail

__all__ = ["check_geometric_ladder", "check_weighted_dsm_loss", "check_annealed_level",
           "check_tweedie_denoise"]


# -- the ladder -----------------------------------------------------------------------------------
@exercise_check
def check_geometric_ladder(geometric_ladder: Callable[[float, float, int], Tensor]) -> None:
    """Exercise: `geometric_ladder(sigma_max, sigma_min, n_levels) -> (L,)` float64, the levels
    sigma_i = sigma_max gamma^-(i - 1), i = 1..L, with gamma = (sigma_max / sigma_min)^(1 / (L - 1)),
    so sigma_1 = sigma_max and sigma_L = sigma_min."""
    gen = torch.Generator().manual_seed(40)
    cases = [(10.0, 0.01, 24), (50.0, 0.01, 232), (1.0, 0.5, 2), (20.0, 0.1, 3)]
    for _ in range(3):
        low = float(10 ** (-3 + 2 * torch.rand((), generator=gen, dtype=_DTYPE)))
        cases.append((low * float(10 ** (1 + 3 * torch.rand((), generator=gen, dtype=_DTYPE))), low,
                      int(torch.randint(2, 60, (), generator=gen))))
    for sigma_max, sigma_min, n in cases:
        what = f"for sigma_max={sigma_max:.4g}, sigma_min={sigma_min:.4g}, n_levels={n}"
        got = geometric_ladder(sigma_max, sigma_min, n)
        expected = VESDE(sigma_min, sigma_max).discrete_sigmas(n)
        if torch.is_tensor(got) and got.dtype != torch.float64:
            fail(f"geometric_ladder returned {got.dtype} {what}; return float64 (dtype=torch.float64)")
        if torch.is_tensor(got) and got.ndim == 1 and got.shape[0] in (n - 1, n + 1):
            fail(f"geometric_ladder returned {got.shape[0]} levels {what}; the ladder has n_levels "
                 "levels, both ends included (n_levels - 1 ratios between them)")
        ratio_l = (sigma_max / sigma_min) ** (1 / n)
        hints = {
            "the levels increase: the ladder goes down, from sigma_max (annealing starts noisy) "
            "to sigma_min": expected.flip(0),
            "the levels are evenly spaced in sigma; a geometric ladder is evenly spaced in "
            "log sigma (a constant ratio)": torch.linspace(sigma_max, sigma_min, n, dtype=_DTYPE),
            "the ratio is (sigma_max / sigma_min)^(1 / n_levels); n_levels levels have "
            "n_levels - 1 gaps, so it is ^(1 / (n_levels - 1)) and the last level is sigma_min":
                sigma_max * ratio_l ** -torch.arange(n, dtype=_DTYPE),
        }
        _assert_close("geometric_ladder", got, expected, what, rtol=1e-10, atol=0.0, hints=hints)
    print("Correct: geometric_ladder runs from sigma_max down to sigma_min with a constant ratio.")


# -- the weighted loss ----------------------------------------------------------------------------
def _toy_score(x: Tensor, sigma: Tensor) -> Tensor:
    """A score-like function s(x, sigma) of x: (B, *D) and sigma: (B,) whose value depends on
    both (so that evaluating it at the wrong point or level gives a different answer)."""
    if not torch.is_tensor(sigma) or sigma.shape != (x.shape[0],):
        raise ValueError(f"score_fn needs sigma as a tensor of shape (B,) = ({x.shape[0]},), one level "
                         f"per sample, got {tuple(sigma.shape) if torch.is_tensor(sigma) else sigma!r}")
    if sigma.dtype != x.dtype:
        fail(f"score_fn got sigma in {sigma.dtype} but x in {x.dtype}: make the sigma tensor x's dtype, "
             "e.g. torch.full((B,), sigma, dtype=x.dtype)")
    s = append_dims(sigma, x.ndim)
    return -x / (1 + s**2) + torch.tanh(x).flip(-1) / s


def _weighted_loss(score_fn, x, sigmas, levels, z, weight_power=2.0, target_sign=-1.0, at_clean=False,
                   half=0.5, reduce="mean") -> Tensor:
    sigma = sigmas[levels]
    s_b = append_dims(sigma, x.ndim)
    point = x if at_clean else x + s_b * z
    residual = score_fn(point, sigma) - target_sign * z / s_b
    per_sample = half * sigma**weight_power * residual.flatten(1).square().sum(1)
    if reduce == "elements":  # a mean over every element, as F.mse_loss takes it
        return per_sample.mean() / residual[0].numel()
    return per_sample.mean() if reduce == "mean" else per_sample.sum()


def _loss_cases(gen: torch.Generator):
    sigmas = torch.exp(torch.linspace(math.log(10.0), math.log(0.01), 12, dtype=_DTYPE))
    for shape in ((64, 2), (16, 1, 4, 4), (1, 3)):
        x = torch.randn(shape, generator=gen, dtype=_DTYPE)
        z = torch.randn(shape, generator=gen, dtype=_DTYPE)
        levels = torch.randint(0, len(sigmas), (shape[0],), generator=gen)
        yield x, sigmas, levels, z, f"for x of shape {shape}"


@exercise_check
def check_weighted_dsm_loss(weighted_dsm_loss: Callable[..., Tensor]) -> None:
    """Exercise: `weighted_dsm_loss(score_fn, x, sigmas, levels, z)`, the NCSN objective for
    given levels (B,) (indices into sigmas (L,)) and noise z of x's shape:
    mean_b (1/2) sigma_b^2 ||s(x_b + sigma_b z_b, sigma_b) + z_b / sigma_b||^2, a 0-d tensor."""
    gen = torch.Generator().manual_seed(41)
    for x, sigmas, levels, z, what in _loss_cases(gen):
        inputs = (x.clone(), sigmas.clone(), levels.clone(), z.clone())
        got = weighted_dsm_loss(_toy_score, *inputs)
        if not all(torch.equal(a, b) for a, b in zip(inputs, (x, sigmas, levels, z))):
            fail("weighted_dsm_loss must not modify its inputs in place")
        args = (_toy_score, x, sigmas, levels, z)
        expected = _weighted_loss(*args)
        hints = {
            "the weighting lambda(sigma) = sigma^2 is missing: without it the smallest levels, whose "
            "targets z / sigma are largest, dominate the sum": _weighted_loss(*args, weight_power=0.0),
            "it weights by sigma, not lambda(sigma) = sigma^2": _weighted_loss(*args, weight_power=1.0),
            "it weights by 1 / sigma^2: lambda(sigma) = sigma^2 multiplies the squared error":
                _weighted_loss(*args, weight_power=-2.0),
            "the target has the wrong sign: the noised point moved by +sigma z, so the score "
            "points back, target -z / sigma": _weighted_loss(*args, target_sign=1.0),
            "the score is evaluated at the clean x; evaluate it at the noised x + sigma z":
                _weighted_loss(*args, at_clean=True),
            "the factor 1/2 is missing": _weighted_loss(*args, half=1.0),
            "it sums over the batch; take the mean": _weighted_loss(*args, reduce="sum"),
            "it averages over each example's coordinates too (a mean over all elements, as "
            "F.mse_loss takes it): sum the squared error over the coordinates, then average over "
            "the batch": _weighted_loss(*args, reduce="elements"),
            "it averages over each example's coordinates too (a mean over all elements) and the "
            "factor 1/2 is missing: sum the squared error over the coordinates, halve it, then "
            "average over the batch": _weighted_loss(*args, half=1.0, reduce="elements"),
        }
        _assert_close("weighted_dsm_loss", got, expected, what, hints=hints)
    print("Correct: weighted_dsm_loss = mean (1/2) sigma^2 ||s(x + sigma z, sigma) + z / sigma||^2.")


# -- one level of annealed Langevin ---------------------------------------------------------------
def _level(score_fn, x, sigma, sigma_min, eps, z, *, power=2.0, drift=0.5, noise=0.5, noise_scale=1.0,
           level_sigma=None, frozen_score=False) -> Tensor:
    """T moves x + drift alpha s + noise_scale alpha^noise z_t; the defaults are the right answer."""
    alpha = eps * (sigma / sigma_min) ** power
    sig_b = torch.full((x.shape[0],), level_sigma or sigma, dtype=x.dtype)
    s0 = score_fn(x, sig_b)
    for z_t in z:
        s = s0 if frozen_score else score_fn(x, sig_b)
        x = x + drift * alpha * s + noise_scale * alpha**noise * z_t
    return x


@exercise_check
def check_annealed_level(annealed_level: Callable[..., Tensor]) -> None:
    """Exercise: `annealed_level(score_fn, x, sigma, sigma_min, eps, z)` runs the T = len(z)
    Langevin moves of one level of annealed Langevin dynamics, x <- x + (alpha/2) s(x, sigma)
    + sqrt(alpha) z_t with alpha = eps sigma^2 / sigma_min^2, and returns the last x.
    z: (T, B, *D); score_fn(x, sigma) takes sigma as a (B,) tensor."""
    gen = torch.Generator().manual_seed(42)
    cases = [((32, 2), 1.5, 0.1, 2e-3, 4), ((8, 1, 4, 4), 0.3, 0.01, 1e-5, 3), ((5, 2), 0.1, 0.1, 1e-3, 2),
             ((4, 3), 4.0, 0.5, 0.01, 1)]
    for shape, sigma, sigma_min, eps, steps in cases:
        x = torch.randn(shape, generator=gen, dtype=_DTYPE)
        z = torch.randn((steps, *shape), generator=gen, dtype=_DTYPE)
        inputs = (x.clone(), z.clone())
        got = annealed_level(_toy_score, inputs[0], sigma, sigma_min, eps, inputs[1])
        if not all(torch.equal(a, b) for a, b in zip(inputs, (x, z))):
            fail("annealed_level must not modify x or z in place")
        args = (_toy_score, x, sigma, sigma_min, eps, z)
        what = f"for x of shape {shape}, sigma={sigma}, sigma_min={sigma_min}, eps={eps}, T={steps}"
        hints = {
            "the step is eps; at level sigma it is alpha = eps sigma^2 / sigma_min^2": _level(*args, power=0.0),
            "the step scales as sigma / sigma_min; it is alpha = eps (sigma / sigma_min)^2":
                _level(*args, power=1.0),
            "the score term lacks the factor 1/2: (alpha / 2) s": _level(*args, drift=1.0),
            "the noise is alpha z; it is sqrt(alpha) z (its variance is alpha)": _level(*args, noise=1.0),
            "the noise is sqrt(2 alpha) z; in this course's convention (alpha / 2) s pairs with "
            "sqrt(alpha) z": _level(*args, noise_scale=2**0.5),
            "that is the other convention, x + alpha s + sqrt(2 alpha) z; in this course's, "
            "alpha / 2 multiplies the score and sqrt(alpha) the noise": _level(*args, drift=1.0, noise_scale=2**0.5),
            "the score is evaluated once; evaluate it again at every move": _level(*args, frozen_score=True),
            "the score is evaluated at sigma_min; within the level it is s(x, sigma)":
                _level(*args, level_sigma=sigma_min),
        }
        _assert_close("annealed_level", got, _level(*args), what, hints=hints)
    print("Correct: annealed_level makes T moves x + (alpha/2) s(x, sigma) + sqrt(alpha) z, "
          "alpha = eps sigma^2 / sigma_min^2.")


# -- Tweedie's denoiser ---------------------------------------------------------------------------
@exercise_check
def check_tweedie_denoise(tweedie_denoise: Callable[..., Tensor]) -> None:
    """Exercise: `tweedie_denoise(score_fn, x, sigma)` returns E[x_0 | x] = x + sigma^2 s(x, sigma)
    for x: (B, *D) noised with N(0, sigma^2 I) and a float sigma."""
    gen = torch.Generator().manual_seed(43)
    for shape, sigma in (((16, 2), 0.7), ((4, 1, 4, 4), 0.01), ((3, 5), 2.5)):
        x = torch.randn(shape, generator=gen, dtype=_DTYPE)
        got = tweedie_denoise(_toy_score, x.clone(), sigma)
        s = _toy_score(x, torch.full((shape[0],), sigma, dtype=_DTYPE))
        hints = {
            "it multiplies the score by sigma; Tweedie's formula has sigma^2": x + sigma * s,
            "the sign is wrong: the score points towards the data, so E[x_0 | x] = x + sigma^2 s":
                x - sigma**2 * s,
            "it returns the score step alone; add it to x": sigma**2 * s,
        }
        _assert_close("tweedie_denoise", got, x + sigma**2 * s, f"for x of shape {shape}, sigma={sigma}",
                      hints=hints)
    print("Correct: tweedie_denoise = x + sigma^2 s(x, sigma), the posterior mean E[x_0 | x].")
