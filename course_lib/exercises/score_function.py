"""Checks for the exercises of chapter 1, the score function."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..distributions import GaussianMixture
from .checking import DTYPE as _DTYPE, assert_close as _assert_close, exercise_check, fail

__all__ = ["check_gaussian_score", "check_curl_2d", "check_mixture_score"]


def _random_spd(dim: int, gen: torch.Generator) -> Tensor:
    a = torch.randn(dim, dim, generator=gen, dtype=_DTYPE)
    return a @ a.T / dim + 0.5 * torch.eye(dim, dtype=_DTYPE)


@exercise_check
def check_gaussian_score(gaussian_score: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Exercise: `gaussian_score(x: (B, D), mean: (D,), cov: (D, D)) -> (B, D)`."""
    gen = torch.Generator().manual_seed(0)
    for dim in (1, 2, 5):
        mean = torch.randn(dim, generator=gen, dtype=_DTYPE)
        cov = _random_spd(dim, gen)
        x = 3 * torch.randn(16, dim, generator=gen, dtype=_DTYPE)
        xg = x.clone().requires_grad_(True)
        logp = torch.distributions.MultivariateNormal(mean, cov).log_prob(xg).sum()
        (expected,) = torch.autograd.grad(logp, xg)
        _assert_close("gaussian_score", gaussian_score(x, mean, cov), expected, f"in dimension {dim}")
    print("Correct: gaussian_score = autograd of log N(x; mean, cov), D = 1, 2, 5.")


@exercise_check
def check_curl_2d(curl_2d: Callable[[Callable, Tensor], Tensor]) -> None:
    """Exercise: `curl_2d(field: (B, 2) -> (B, 2), x: (B, 2)) -> (B,)`, the scalar curl
    dv_2/dx_1 - dv_1/dx_2 of a planar vector field, by autograd."""
    gen = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(32, 2, generator=gen, dtype=_DTYPE)
    x1, x2 = x.unbind(1)
    mixture = GaussianMixture(torch.tensor([0.3, 0.7], dtype=_DTYPE),
                              torch.tensor([[-1.0, 0.0], [1.5, 1.0]], dtype=_DTYPE),
                              torch.tensor([[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 0.8]]], dtype=_DTYPE))
    cases = {
        "the rotation field (-x_2, x_1), whose curl is 2": (lambda y: torch.stack([-y[:, 1], y[:, 0]], 1),
                                                            torch.full_like(x1, 2.0)),
        "the field (x_1 x_2^2, x_1^2)": (lambda y: torch.stack([y[:, 0] * y[:, 1] ** 2, y[:, 0] ** 2], 1),
                                         2 * x1 - 2 * x1 * x2),
        "the score of a Gaussian mixture, a gradient field": (mixture.score, torch.zeros_like(x1)),
    }
    for what, (field, expected) in cases.items():
        got = curl_2d(field, x.clone())
        _assert_close("curl_2d", got, expected, f"for {what}")
        if got.requires_grad:
            fail("curl_2d should return a tensor detached from the graph")
    print("Correct: curl_2d is right on a rotation, a polynomial and a score field.")


@exercise_check
def check_mixture_score(mixture_score: Callable[[Tensor, Tensor, Tensor, float], Tensor]) -> None:
    """Exercise: `mixture_score(x: (B, D), weights: (K,), means: (K, D), std: float) -> (B, D)`
    for the isotropic mixture sum_k w_k N(mu_k, std^2 I), stable far from every mode."""
    gen = torch.Generator().manual_seed(2)
    for k, dim, std in ((4, 2, 0.5), (3, 1, 1.5), (1, 3, 0.7), (5, 3, 0.3)):
        weights = torch.softmax(torch.randn(k, generator=gen, dtype=_DTYPE), 0)
        means = 3 * torch.randn(k, dim, generator=gen, dtype=_DTYPE)
        covs = (std**2 * torch.eye(dim, dtype=_DTYPE)).expand(k, dim, dim)
        exact = GaussianMixture(weights, means, covs)
        near = 3 * torch.randn(64, dim, generator=gen, dtype=_DTYPE)
        far = 1e3 * torch.randn(2, dim, generator=gen, dtype=_DTYPE)
        where = f"(K={k}, D={dim})"
        for x, place in ((near, "near the modes"), (far, "far from every mode")):
            inputs = (x.clone(), weights.clone(), means.clone())
            got = mixture_score(*inputs, std)
            if not all(torch.equal(a, b) for a, b in zip(inputs, (x, weights, means))):
                fail("mixture_score must not modify its inputs in place")
            hint = " (hint: a softmax of log-terms)" if place.startswith("far") else ""
            _assert_close("mixture_score", got, exact.score(x), f"{place} {where}{hint}")
    print("Correct: mixture_score is exact near the modes and far from them.")
