"""Conversions among the four things a diffusion network may predict, for the kernel

    x_t = alpha x_0 + std eps,    eps ~ N(0, I),

with alpha = alpha(t) the mean coefficient and std = sigma(t) (see `course_lib.sde`):
the score grad log p_t(x_t), the noise eps, the clean data x_0 and the velocity
v = alpha eps - std x_0 (Salimans & Ho, 2022, "Progressive Distillation", with a general
alpha and std). Every identity holds for the exact posterior means too:
score = -E[eps | x_t] / std (Vincent, 2011) and E[x_0 | x_t] = (x_t + std^2 score) / alpha
(Tweedie's formula).

Shapes: x, score, eps, x0, v: (B, *D); alpha, std: (B,) tensors (or floats), broadcast with
`append_dims`. Divisions by std or alpha assume they are non-zero (t in [eps, T]).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .sde import SDE
from .utils import append_dims, batch_time


def _per_sample(c: Tensor | float, x: Tensor, name: str) -> Tensor:
    """A (B,) coefficient (or a float) as (B, 1, ..., 1) against x: (B, *D)."""
    c = torch.as_tensor(c, device=x.device, dtype=x.dtype)
    if c.ndim != 0 and c.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a float or have shape ({x.shape[0]},), got {tuple(c.shape)}")
    return append_dims(c, x.ndim)


def eps_from_score(score: Tensor, std: Tensor) -> Tensor:
    """eps = -std * score, since grad log N(x_t; alpha x_0, std^2 I) = -eps / std."""
    return -_per_sample(std, score, "std") * score


def score_from_eps(eps: Tensor, std: Tensor) -> Tensor:
    """score = -eps / std."""
    return -eps / _per_sample(std, eps, "std")


def x0_from_eps(x: Tensor, eps: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """x_0 = (x_t - std eps) / alpha."""
    return (x - _per_sample(std, x, "std") * eps) / _per_sample(alpha, x, "alpha")


def eps_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """eps = (x_t - alpha x_0) / std."""
    return (x - _per_sample(alpha, x, "alpha") * x0) / _per_sample(std, x, "std")


def score_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """score = -(x_t - alpha x_0) / std^2."""
    return -(x - _per_sample(alpha, x, "alpha") * x0) / _per_sample(std, x, "std") ** 2


def x0_from_score(x: Tensor, score: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """Tweedie's formula: x_0 = (x_t + std^2 score) / alpha."""
    return (x + _per_sample(std, x, "std") ** 2 * score) / _per_sample(alpha, x, "alpha")


def v_from_eps_x0(eps: Tensor, x0: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """v = alpha eps - std x_0 (Salimans & Ho, 2022, with a general alpha and std)."""
    return _per_sample(alpha, eps, "alpha") * eps - _per_sample(std, eps, "std") * x0


def eps_from_v(x: Tensor, v: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """eps = (std x_t + alpha v) / (alpha^2 + std^2), solving x_t = alpha x_0 + std eps and
    v = alpha eps - std x_0 for eps (alpha^2 + std^2 = 1 is not assumed)."""
    a, s = _per_sample(alpha, x, "alpha"), _per_sample(std, x, "std")
    return (s * x + a * v) / (a**2 + s**2)


def x0_from_v(x: Tensor, v: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """x_0 = (alpha x_t - std v) / (alpha^2 + std^2), the same 2 x 2 system solved for x_0."""
    a, s = _per_sample(alpha, x, "alpha"), _per_sample(std, x, "std")
    return (a * x - s * v) / (a**2 + s**2)


def v_from_eps(x: Tensor, eps: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """v = alpha eps - std x_0 with x_0 = (x_t - std eps) / alpha."""
    return v_from_eps_x0(eps, x0_from_eps(x, eps, alpha, std), alpha, std)


def v_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """v = alpha eps - std x_0 with eps = (x_t - alpha x_0) / std."""
    return v_from_eps_x0(eps_from_x0(x, x0, alpha, std), x0, alpha, std)


def score_from_v(x: Tensor, v: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """score = -eps / std with eps = (std x_t + alpha v) / (alpha^2 + std^2)."""
    return score_from_eps(eps_from_v(x, v, alpha, std), std)


# -- a network's output as a score function ------------------------------------------------
class _ScoreFrom(nn.Module):
    """score_fn(x, t) from a network net(x, t) that predicts another quantity; subclasses
    name the identity `to_score(x, output, alpha, sigma)`. x: (B, *D), t: (B,) or a float."""

    def __init__(self, net: nn.Module, sde: SDE):
        super().__init__()
        self.net, self.sde = net, sde

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = batch_time(t, x)
        return self.to_score(x, self.net(x, t), *self.sde.marginal(t))


class ScoreFromEps(_ScoreFrom):
    """score = -net(x, t) / sigma(t) for a network predicting eps."""

    @staticmethod
    def to_score(x, eps, alpha, sigma):
        return score_from_eps(eps, sigma)


class ScoreFromX0(_ScoreFrom):
    """score = -(x - alpha(t) net(x, t)) / sigma(t)^2 for a network predicting x_0."""

    to_score = staticmethod(score_from_x0)


class ScoreFromV(_ScoreFrom):
    """score for a network predicting v = alpha eps - sigma x_0."""

    to_score = staticmethod(score_from_v)


class SigmaConditionedScore(nn.Module):
    """NCSN's noise-conditional score s(x, sigma) = -net(x, log sigma) / sigma for a network
    predicting the noise eps of x = x_0 + sigma eps (Song & Ermon, 2020, technique 3: the score's
    size scales as 1 / sigma, so the network's output stays of order one at every level).
    x: (B, *D), sigma: (B,) or a float; `score_fn(x, sigma)` for `langevin.annealed_langevin`.
    Under the VE SDE, sigma = sde.marginal_std(t) turns it into a time-conditioned score."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = batch_time(sigma, x)
        return score_from_eps(self.net(x, sigma.log()), sigma)
