"""How to choose NCSN's noise levels and Langevin step size: the rules of Song & Ermon (2020),
"Improved Techniques for Training Score-Based Generative Models" (NCSNv2).

1. sigma_1 about the largest Euclidean distance between two training points, so the noisiest
   level can move a sample from any data point to any other (`max_pairwise_distance`).
2. A geometric ladder sigma_1 > ... > sigma_L with ratio gamma = sigma_{i-1} / sigma_i chosen so
   that a sample of N(0, sigma_i^2 I) lands in the typical shell of N(0, sigma_{i-1}^2 I) with
   probability about 1/2 (`geometric_ratio`); in high dimension ||x|| concentrates at
   sigma sqrt(D) with std sigma / sqrt(2), which makes adjacent levels overlap only if gamma is
   close to 1.
3. (Noise conditioning, s(x, sigma) = s(x) / sigma: `parameterization.SigmaConditionedScore`.)
4. With n_steps_each Langevin moves per level, the step size that makes the chain's variance at
   the end of each level match the level's own, for data concentrated at a point
   (`annealed_step_size`).
5. (An exponential moving average of the weights: `train.TrainConfig.ema_decay`.)

Step sizes follow the library's Langevin convention (`course_lib.langevin`): the move is
x + (eta / 2) score + sqrt(eta) z with eta_i = eps sigma_i^2 / sigma_L^2, so this `eps` is twice
the epsilon of NCSNv2's code, which writes x + alpha score + sqrt(2 alpha) z.
"""

from __future__ import annotations

import math

import torch
from scipy.optimize import brentq
from scipy.stats import norm
from torch import Tensor

from .utils import check_positive


def max_pairwise_distance(x: Tensor, *, block: int = 2048) -> float:
    """max_{i, j} ||x_i - x_j|| over a data set x: (N, *D), in blocks of rows (technique 1)."""
    if not torch.is_tensor(x) or x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"x must be a tensor (N, *D) with N >= 2, got {getattr(x, 'shape', x)}")
    flat = x.detach().flatten(1).double()
    return max(float(torch.cdist(rows, flat).max()) for rows in flat.split(block))


def shell_overlap(gamma: float, dim: int) -> float:
    """P(||x|| within 3 std of sigma_{i-1} sqrt(D)) for x ~ N(0, sigma_i^2 I), gamma = sigma_{i-1}/sigma_i,
    with ||x|| ~ N(sigma_i sqrt(D), sigma_i^2 / 2): Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma)."""
    root = math.sqrt(2 * dim) * (gamma - 1)
    return float(norm.cdf(root + 3 * gamma) - norm.cdf(root - 3 * gamma))


def geometric_ratio(dim: int, overlap: float = 0.5) -> float:
    """The ratio gamma > 1 of adjacent noise levels with shell_overlap(gamma, dim) = overlap (technique 2)."""
    if not isinstance(dim, int) or dim < 5:
        # the shell picture needs sqrt(2 D) > 3: below, the overlap tends to 1 as gamma grows
        raise ValueError(f"dim must be an integer >= 5 (the rule is a high-dimensional approximation), got {dim!r}")
    if not (isinstance(overlap, (int, float)) and 0 < overlap < shell_overlap(1.0, dim)):
        raise ValueError(f"overlap must lie in (0, {shell_overlap(1.0, dim):.4f}), got {overlap!r}")
    high = 2.0
    while shell_overlap(high, dim) > overlap:
        high *= 2
    return brentq(lambda g: shell_overlap(g, dim) - overlap, 1.0, high, xtol=1e-12)


def n_levels(sigma_max: float, sigma_min: float, gamma: float) -> int:
    """The number of levels L of a geometric ladder from sigma_max to sigma_min whose ratio is
    at most gamma: L = ceil(log(sigma_max / sigma_min) / log(gamma)) + 1."""
    sigma_max, sigma_min = check_positive("sigma_max", sigma_max), check_positive("sigma_min", sigma_min)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
    if not (isinstance(gamma, (int, float)) and gamma > 1):
        raise ValueError(f"gamma must be a number > 1, got {gamma!r}")
    return math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma) - 1e-9) + 1


def level_variance_ratio(eps: float, sigma_min: float, gamma: float, n_steps_each: int) -> float:
    """s_T^2 / sigma_i^2 after n_steps_each = T moves at level i, started at variance
    (gamma sigma_i)^2, for data at a single point (p_sigma = N(0, sigma^2 I)): the moves are
    x <- a x + sqrt(eta_i) z with a = 1 - eps / (2 sigma_min^2), so
    s_T^2 / sigma_i^2 = a^(2T) (gamma^2 - r) + r with r = (eps / sigma_min^2) / (1 - a^2),
    the same for every level (NCSNv2, eq. 4, in this library's convention)."""
    a = 1.0 - eps / (2.0 * sigma_min**2)
    r = (eps / sigma_min**2) / (1.0 - a * a)
    return a ** (2 * n_steps_each) * (gamma**2 - r) + r


def annealed_step_size(sigma_min: float, gamma: float, n_steps_each: int) -> float:
    """The eps of `langevin.annealed_langevin` (eta_i = eps sigma_i^2 / sigma_L^2) that brings
    `level_variance_ratio` closest to 1 (technique 4). The ratio never reaches 1: with
    u = eps / sigma_min^2 the chain's stationary ratio r = 1 / (1 - u / 4) exceeds 1 (the
    discretization bias of unadjusted Langevin), while small steps leave the start's gamma^2;
    the best u balances the two. Found on a grid in log u in [1e-12, 1], refined by scipy."""
    from scipy.optimize import minimize_scalar

    sigma_min = check_positive("sigma_min", sigma_min)
    if not (isinstance(gamma, (int, float)) and gamma > 1):
        raise ValueError(f"gamma must be a number > 1, got {gamma!r}")
    if not isinstance(n_steps_each, int) or n_steps_each < 1:
        raise ValueError(f"n_steps_each must be an integer >= 1, got {n_steps_each!r}")

    def excess(log_u: float) -> float:
        return abs(level_variance_ratio(math.exp(log_u) * sigma_min**2, sigma_min, gamma, n_steps_each) - 1.0)

    grid = [math.log(10.0) * k / 16 for k in range(-192, 1)]  # u = 1e-12 ... 1
    best = min(range(len(grid)), key=lambda k: excess(grid[k]))
    bounds = (grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)])
    log_u = minimize_scalar(excess, bounds=bounds, method="bounded", options={"xatol": 1e-10}).x
    return math.exp(log_u) * sigma_min**2
