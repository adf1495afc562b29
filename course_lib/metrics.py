"""Sample-quality metrics: sliced Wasserstein, MMD, mode coverage of a Gaussian mixture, and
the noise floor that tells what a perfect sampler would score.

Sample sets are `(N, *D)` tensors; image-shaped sets are flattened to `(N, prod(D))`.
A classifier-feature Frechet distance for digits lives in `course_lib.digits_classifier`.

How to read a metric: finite sample sets of the *true* distribution already score above zero
(sliced W2 and Frechet distances are biased upwards) or scatter around zero (unbiased MMD^2).
`noise_floor` measures that value at the same sample size; a sampler whose score lies within
about two standard deviations of the floor's mean cannot be told apart from exact sampling
with that many samples, and only the excess over the floor measures its error.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .distributions import GaussianMixture

Metric = Callable[[Tensor, Tensor], Tensor]


def _flatten(name: str, x: Tensor, min_n: int = 1) -> Tensor:
    """x: (N, *D) -> (N, prod(D)), with a ValueError naming `name` on bad input."""
    if not torch.is_tensor(x) or x.ndim < 2 or not x.dtype.is_floating_point:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must be a floating tensor of shape (N, *D), got {shape}")
    if x.shape[0] < min_n:
        raise ValueError(f"{name} must hold at least {min_n} samples, got {x.shape[0]}")
    return x.reshape(x.shape[0], -1)


def _flatten_pair(x: Tensor, y: Tensor, min_n: int = 1, same_n: bool = False) -> tuple[Tensor, Tensor]:
    """Flatten x: (N, *D) and y: (M, *D); ValueError naming x / y unless D (and N = M) agree."""
    xf, yf = _flatten("x", x, min_n), _flatten("y", y, min_n)
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y must have the same sample shape, got x: {tuple(x.shape)}, y: {tuple(y.shape)}")
    if same_n and x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of samples, got x: {x.shape[0]}, y: {y.shape[0]}")
    return xf, yf.to(device=xf.device, dtype=xf.dtype)


# -- sliced Wasserstein ------------------------------------------------------------------------
def sliced_wasserstein(x: Tensor, y: Tensor, *, n_projections: int = 256,
                       generator: torch.Generator | None = None) -> Tensor:
    """Sliced 2-Wasserstein distance between two equal-size sample sets: 0-d tensor.

    x, y: (N, *D), flattened to (N, D). SW2(x, y)^2 = E_theta W2^2(<theta, x>, <theta, y>) over
    unit directions theta uniform on the sphere (Rabin et al., 2011; Bonneel et al., 2015);
    in 1-D the W2 of two empirical laws with N atoms each pairs the sorted values. The expectation
    is estimated with `n_projections` random directions.
    """
    x, y = _flatten_pair(x, y, same_n=True)
    if not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections must be a positive integer, got {n_projections!r}")
    gen_device = generator.device if generator is not None else x.device
    theta = torch.randn(x.shape[1], n_projections, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (D, L) unit directions
    x_proj, _ = torch.sort(x @ theta, dim=0)  # (N, L) sorted projections
    y_proj, _ = torch.sort(y @ theta, dim=0)
    w2_squared = (x_proj - y_proj).pow(2).mean(dim=0)  # (L,) W2^2 along each direction
    return w2_squared.mean().sqrt()


# -- maximum mean discrepancy ------------------------------------------------------------------
_BLOCK_ENTRIES = 2**22  # kernel entries held at once (16 MiB in float32)
_MEDIAN_POINTS = 1000   # pooled points the median heuristic looks at


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """|a_i - b_j|^2: (n, m) for a: (n, D), b: (m, D), clamped at 0 against round-off.

    Computed as |a|^2 + |b|^2 - 2 a.b after subtracting the pooled mean (distances are translation
    invariant): far from the origin the three terms would otherwise cancel to float32 round-off.
    """
    center = (a.sum(0) + b.sum(0)) / (a.shape[0] + b.shape[0])
    a, b = a - center, b - center
    return ((a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * a @ b.T).clamp_min(0.0)


def _kernel_sum(a: Tensor, b: Tensor, gamma: float) -> Tensor:
    """sum_{i, j} exp(-gamma |a_i - b_j|^2), in row blocks of about _BLOCK_ENTRIES entries."""
    rows = max(1, _BLOCK_ENTRIES // b.shape[0])
    total = torch.zeros((), device=a.device, dtype=a.dtype)
    for start in range(0, a.shape[0], rows):
        total = total + torch.exp(-gamma * _sq_dists(a[start:start + rows], b)).sum()
    return total


def median_bandwidth(x: Tensor, y: Tensor) -> Tensor:
    """Median heuristic: the median distance between distinct points of the pooled sample.

    x: (N, *D), y: (M, *D). At most 1000 evenly spaced pooled points are used, so the cost
    stays fixed for large sets. Returns a 0-d tensor.
    """
    x, y = _flatten_pair(x, y)
    pooled = torch.cat([x, y])
    step = max(1, math.ceil(pooled.shape[0] / _MEDIAN_POINTS))
    pooled = pooled[::step]
    iu = torch.triu_indices(pooled.shape[0], pooled.shape[0], offset=1, device=pooled.device)
    dists = _sq_dists(pooled, pooled)[iu[0], iu[1]].sqrt()
    return dists.median()


def mmd_rbf(x: Tensor, y: Tensor, *, bandwidth: float | None = None) -> Tensor:
    """Unbiased estimate of MMD^2 with the Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 h^2)).

    x: (N, *D), y: (M, *D) with N, M >= 2 (Gretton et al., 2012, JMLR, Lemma 6):
        MMD_u^2 = sum_{i != j} k(x_i, x_j) / (N (N - 1)) + sum_{i != j} k(y_i, y_j) / (M (M - 1))
                  - 2 sum_{i, j} k(x_i, y_j) / (N M).
    Its expectation is exactly MMD^2 >= 0, so for equal laws it scatters around 0 and can be
    negative. h = `bandwidth`, or the median heuristic (`median_bandwidth`) when None; that h
    is the scale of the whole data set, so it barely sees errors much finer than it (e.g. blur
    within narrow modes): pass a smaller bandwidth to test those.
    The kernel matrices are summed in blocks, so N = M = 10^4 fits in little memory.
    """
    x, y = _flatten_pair(x, y, min_n=2)
    if bandwidth is None:
        h = float(median_bandwidth(x, y))
        if h == 0.0:
            raise ValueError("the median heuristic gave bandwidth 0 (over half the points coincide); pass bandwidth")
    else:
        h = float(bandwidth)
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"bandwidth must be a finite number > 0 or None, got {bandwidth!r}")
    gamma = 1.0 / (2.0 * h * h)
    n, m = x.shape[0], y.shape[0]
    # k(a, a) = 1: the diagonals contribute exactly n and m to the full sums
    k_xx = (_kernel_sum(x, x, gamma) - n) / (n * (n - 1))
    k_yy = (_kernel_sum(y, y, gamma) - m) / (m * (m - 1))
    k_xy = _kernel_sum(x, y, gamma) / (n * m)
    return k_xx + k_yy - 2.0 * k_xy


# -- noise floor -------------------------------------------------------------------------------
def noise_floor(metric: Metric, sample_fn: Callable, n: int, *, repeats: int = 5,
                generator: torch.Generator | None = None) -> tuple[float, float]:
    """Mean and standard deviation of metric(true_1, true_2) over `repeats` pairs of independent
    exact sample sets of size n, each drawn as sample_fn(n, generator=generator).

    This is the score of a perfect sampler at sample size n (see the module docstring for how
    to read a metric against it), e.g. `noise_floor(mmd_rbf, mixture.sample, 1000)`; a metric
    with its own randomness takes it through functools.partial(sliced_wasserstein, generator=g).
    Compare only at the same n: the floor falls as n grows
    (about n^{-1/2} for sliced W2, and the scatter of MMD_u^2 as about 1/n).
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats must be an integer >= 2 (a std needs two values), got {repeats!r}")
    values = torch.tensor([
        float(metric(sample_fn(n, generator=generator), sample_fn(n, generator=generator)))
        for _ in range(repeats)
    ], dtype=torch.float64)
    return float(values.mean()), float(values.std())


# -- mode coverage -----------------------------------------------------------------------------
def _mahalanobis_and_log_joint(x: Tensor, mixture: GaussianMixture) -> tuple[Tensor, Tensor]:
    """Mahalanobis distances d_k(x) = |L_k^{-1} (x - mu_k)| and log(w_k N_k(x)): both (B, K),
    with S_k = L_k L_k^T the Cholesky factor."""
    chol = torch.linalg.cholesky(mixture.covs)  # (K, D, D)
    diff = (x.unsqueeze(0) - mixture.means.unsqueeze(1)).transpose(1, 2)  # (K, D, B)
    white = torch.linalg.solve_triangular(chol, diff, upper=False)  # (K, D, B)
    d2 = white.pow(2).sum(1).T  # (B, K)
    log_det = 2.0 * torch.diagonal(chol, dim1=1, dim2=2).log().sum(-1)  # (K,)
    log_joint = mixture.weights.log() - 0.5 * (d2 + log_det + mixture.dim * math.log(2 * math.pi))
    return d2.sqrt(), log_joint


def mode_coverage(samples: Tensor, mixture: GaussianMixture, *, radius_in_std: float = 3.0) -> dict:
    """How a sample set covers the modes of a Gaussian mixture.

    samples: (N, D). Each sample is assigned to its most responsible component
    k*(x) = argmax_k w_k N_k(x) and counts as near it when its Mahalanobis distance
    sqrt((x - mu_k)^T S_k^{-1} (x - mu_k)) is at most `radius_in_std`. Returns a dict:
      "counts": (K,) int64 tensor, near samples per component;
      "fraction_covered": share of components whose count reaches half its expected share,
          counts_k >= N w_k / 2 (a few stray points do not make a mode covered);
      "off_mode": share of samples within the radius of no component;
      "weight_error": total variation 1/2 sum_k |counts_k / sum(counts) - w_k| between the
          empirical component frequencies of the near samples and the weights (1 when no
          sample is near any component).
    For exact samples, a share P(chi^2_D > r^2) of each component lies outside the radius
    (1.1 % for D = 2, r = 3), so off_mode is small but not zero.
    """
    x = _flatten("samples", samples)
    if x.shape[1] != mixture.dim:
        raise ValueError(f"samples must have D = mixture.dim = {mixture.dim} features, got {tuple(samples.shape)}")
    if not (isinstance(radius_in_std, (int, float)) and math.isfinite(radius_in_std) and radius_in_std > 0):
        raise ValueError(f"radius_in_std must be a finite number > 0, got {radius_in_std!r}")
    mixture = mixture.to(device=x.device, dtype=x.dtype)
    dist, log_joint = _mahalanobis_and_log_joint(x, mixture)
    assigned = log_joint.argmax(dim=1)  # (N,)
    near = dist.gather(1, assigned.unsqueeze(1)).squeeze(1) <= radius_in_std
    counts = torch.bincount(assigned[near], minlength=mixture.n_components)
    n, total = x.shape[0], int(counts.sum())
    covered = counts >= 0.5 * n * mixture.weights
    if total == 0:
        weight_error = 1.0
    else:
        weight_error = 0.5 * float((counts / total - mixture.weights).abs().sum())
    return {
        "counts": counts,
        "fraction_covered": float(covered.to(x.dtype).mean()),
        "off_mode": float((dist.min(dim=1).values > radius_in_std).to(x.dtype).mean()),
        "weight_error": weight_error,
    }
