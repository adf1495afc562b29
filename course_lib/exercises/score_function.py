"""Checks for the exercises of chapter 1, the score function."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..distributions import GaussianMixture
from .checking import DTYPE as _DTYPE, assert_close as _assert_close, exercise_check, fail

__all__ = ["check_gaussian_score", "check_curl_2d", "check_mixture_score"]

# float32 cases: round-off eps = 1.2e-7 times the covariances' condition numbers (below 20), with margin
_F32_RTOL, _F32_ATOL = 1e-4, 1e-5


def _random_spd(dim: int, gen: torch.Generator, dtype=_DTYPE) -> Tensor:
    a = torch.randn(dim, dim, generator=gen, dtype=_DTYPE)
    return (a @ a.T / dim + 0.5 * torch.eye(dim, dtype=_DTYPE)).to(dtype)


def _gaussian_cases(gen: torch.Generator):
    """(x, mean, cov, what, rtol, atol): a fixed case first (B = D = 2, where forgotten transposes
    give a wrong answer rather than a shape error), random ones in D = 1, 2, 5, one point, float32."""
    yield (torch.tensor([[1.0, -2.0], [0.0, 0.0]], dtype=_DTYPE), torch.tensor([0.5, 1.0], dtype=_DTYPE),
           torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=_DTYPE), "for a fixed 2-D Gaussian", 1e-7, 1e-9)
    for dim, batch, dtype in ((1, 16, _DTYPE), (2, 16, _DTYPE), (5, 16, _DTYPE), (3, 1, _DTYPE),
                              (3, 16, torch.float32)):
        mean = torch.randn(dim, generator=gen, dtype=_DTYPE).to(dtype)
        cov = _random_spd(dim, gen, dtype)
        x = (3 * torch.randn(batch, dim, generator=gen, dtype=_DTYPE)).to(dtype)
        tol = (1e-7, 1e-9) if dtype == _DTYPE else (_F32_RTOL, _F32_ATOL)
        yield x, mean, cov, f"in dimension {dim} with {batch} point(s) in {dtype}", *tol


@exercise_check
def check_gaussian_score(gaussian_score: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Exercise: `gaussian_score(x: (B, D), mean: (D,), cov: (D, D)) -> (B, D)`, the score
    -cov^{-1} (x - mean) of each row. Any correct method passes (a solve is advised, not
    enforced: its answer cannot be told apart from an explicit inverse's)."""
    gen = torch.Generator().manual_seed(0)
    for x, mean, cov, what, rtol, atol in _gaussian_cases(gen):
        xg = x.clone().requires_grad_(True)
        logp = torch.distributions.MultivariateNormal(mean, cov).log_prob(xg).sum()
        (expected,) = torch.autograd.grad(logp, xg)
        hints = {
            "the sign is flipped: the score points from x towards the mean, -cov^{-1} (x - mean)": -expected,
            "it multiplies by cov instead of solving with it: the score is -cov^{-1} (x - mean)":
                -(x - mean) @ cov,
            "it forgets the mean: the score is -cov^{-1} (x - mean)": -torch.linalg.solve(cov, x.T).T,
        }
        if x.shape[0] == x.shape[1]:  # elsewhere that mistake is a shape error, reported as such
            hints["solve(cov, b) solves for the columns of b, but the points are the rows of x: "
                  "transpose in and out"] = -torch.linalg.solve(cov, x - mean)
        got = gaussian_score(x.clone(), mean.clone(), cov.clone())
        _assert_close("gaussian_score", got, expected, what, rtol=rtol, atol=atol, hints=hints)
    print("Correct: gaussian_score = autograd of log N(x; mean, cov), D = 1, 2, 3, 5, float64 and float32.")


def _evaluated_away_from(y: Tensor, x: Tensor) -> bool:
    """Whether some row of `y` is none of the rows of `x`: the field was evaluated elsewhere."""
    try:
        rows = y.detach().reshape(-1, x.shape[1])
        return not bool((rows[:, None, :] == x[None]).all(-1).any(1).all())
    except Exception:  # e.g. inside torch.func.vmap, where values cannot be read: no verdict
        return False


@exercise_check
def check_curl_2d(curl_2d: Callable[[Callable, Tensor], Tensor]) -> None:
    """Exercise: `curl_2d(field: (B, 2) -> (B, 2), x: (B, 2)) -> (B,)`, the scalar curl
    dv_2/dx_1 - dv_1/dx_2 of a planar vector field, by autograd.

    Automatic differentiation reads the field at the points x only; finite differences (and
    any other numerical derivative) must evaluate it elsewhere, so an evaluation away from x is
    refused, whatever the accuracy."""
    gen = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(32, 2, generator=gen, dtype=_DTYPE)
    x1, x2 = x.unbind(1)
    mixture = GaussianMixture(torch.tensor([0.3, 0.7], dtype=_DTYPE),
                              torch.tensor([[-1.0, 0.0], [1.5, 1.0]], dtype=_DTYPE),
                              torch.tensor([[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 0.8]]], dtype=_DTYPE))
    cases = {  # what: (field, its curl, its divergence)
        "the field (x_1 x_2^2, x_1^2)": (lambda y: torch.stack([y[:, 0] * y[:, 1] ** 2, y[:, 0] ** 2], 1),
                                         2 * x1 - 2 * x1 * x2, x2**2),
        "the rotation field (-x_2, x_1), whose curl is 2": (lambda y: torch.stack([-y[:, 1], y[:, 0]], 1),
                                                            torch.full_like(x1, 2.0), torch.zeros_like(x1)),
        "the score of a Gaussian mixture, a gradient field": (mixture.score, torch.zeros_like(x1), None),
    }
    for what, (field, expected, divergence) in cases.items():
        away = []

        def watched(y, field=field):
            away.append(_evaluated_away_from(y, x))
            return field(y)

        got = curl_2d(watched, x.clone())
        if any(away):
            fail("curl_2d evaluated the field at points other than x, as finite differences do; "
                 "differentiate field(x) by autograd instead (torch.autograd.grad)")
        hints = {"the sign is flipped: the curl is dv_2/dx_1 - dv_1/dx_2": -expected}
        if divergence is not None:
            hints["it computes the divergence dv_1/dx_1 + dv_2/dx_2, not the curl"] = divergence
        _assert_close("curl_2d", got, expected, f"for {what}", hints=hints)
        if got.requires_grad:
            fail("curl_2d should return a tensor detached from the graph")
    print("Correct: curl_2d is right on a polynomial, a rotation and a score field, by autograd.")


def _far_points(means: Tensor, std: float, n: int, gen: torch.Generator) -> Tensor:
    """n points at least 1000 std from every mean: a random direction u times a radius
    r >= max_k |mu_k| + 1000 std, so that |r u - mu_k| >= r - |mu_k| >= 1000 std."""
    u = torch.randn(n, means.shape[1], generator=gen, dtype=means.dtype)
    u = u / u.norm(dim=1, keepdim=True)
    radius = means.norm(dim=1).max() + 1e3 * std * (1 + torch.rand(n, 1, generator=gen, dtype=means.dtype))
    return radius * u


@exercise_check
def check_mixture_score(mixture_score: Callable[[Tensor, Tensor, Tensor, float], Tensor]) -> None:
    """Exercise: `mixture_score(x: (B, D), weights: (K,), means: (K, D), std: float) -> (B, D)`
    for the isotropic mixture sum_k w_k N(mu_k, std^2 I), stable far from every mode (points at
    least 1000 std from each mean, where every N(x; mu_k, std^2 I) underflows)."""
    gen = torch.Generator().manual_seed(2)
    for k, dim, std in ((4, 2, 0.5), (3, 1, 1.5), (1, 3, 0.7), (5, 3, 0.3)):
        weights = torch.softmax(torch.randn(k, generator=gen, dtype=_DTYPE), 0)
        means = 3 * torch.randn(k, dim, generator=gen, dtype=_DTYPE)
        covs = (std**2 * torch.eye(dim, dtype=_DTYPE)).expand(k, dim, dim)
        exact = GaussianMixture(weights, means, covs)
        near = 3 * torch.randn(64, dim, generator=gen, dtype=_DTYPE)
        far = _far_points(means, std, 2, gen)
        where = f"(K={k}, D={dim})"
        for x, place in ((near, "near the modes"), (far, "far from every mode")):
            inputs = (x.clone(), weights.clone(), means.clone())
            got = mixture_score(*inputs, std)
            if not all(torch.equal(a, b) for a, b in zip(inputs, (x, weights, means))):
                fail("mixture_score must not modify its inputs in place")
            expected = exact.score(x)
            hints = {"it forgets to divide by std^2": expected * std**2,
                     "it divides by std, not std^2": expected * std}
            hint = " (hint: a softmax of log-terms)" if place.startswith("far") else ""
            _assert_close("mixture_score", got, expected, f"{place} {where}{hint}", hints=hints)
    print("Correct: mixture_score is exact near the modes and 1000 standard deviations away.")
