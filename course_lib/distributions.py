"""Gaussian mixtures with exact scores and exact noised marginals, plus 2-D toy samplers.

Under any SDE of `course_lib.sde` the kernel is x_t = alpha(t) x_0 + sigma(t) z, so a mixture
p_0 = sum_k w_k N(mu_k, S_k) stays a mixture at every t:

    p_t = sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I).

Each S_k = U_k diag(l_k) U_k^T is eigendecomposed once; the noised covariance is then
U_k diag(alpha^2 l_k + sigma^2) U_k^T, so densities and scores for a different t per sample
cost two matrix products and no per-sample factorization.

Shapes: `x: (B, D)` (flatten images first), `t: (B,)` or a float; outputs `(B,)` or `(B, D)`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .sde import SDE
from .utils import append_dims, batch_time, check_positive, check_time


def _as_float_tensors(*values) -> list[Tensor]:
    """Convert lists / arrays / tensors to tensors of one floating dtype on the first's device."""
    tensors = [torch.as_tensor(v) for v in values]
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return [t.to(device=tensors[0].device, dtype=dtype) for t in tensors]


class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, S_k) in R^D with full covariances.

    weights: (K,) non-negative, summing to one; means: (K, D); covs: (K, D, D) symmetric
    positive definite. Lists and numpy arrays are converted to tensors.
    """

    def __init__(self, weights, means, covs):
        weights, means, covs = _as_float_tensors(weights, means, covs)
        _check_weights_and_means(weights, means)
        self.weights, self.means, self.log_weights = weights, means, weights.log()
        self.covs, self._evals, self._evecs = _check_covs(covs, *means.shape)
        k, d = means.shape
        # [x, -alpha] @ _proj = U_k^T (x - alpha mu_k) for all k: the U_k side by side (D, K D),
        # then a last row holding the U_k^T mu_k
        rot = self._evecs.permute(1, 0, 2).reshape(d, k * d)
        self._proj = torch.cat([rot, torch.einsum("kde,kd->ke", self._evecs, means).reshape(1, k * d)])
        # [alpha^2, sigma^2] @ _spectrum = alpha^2 l_k + sigma^2, the noised eigenvalues
        self._spectrum = torch.stack([self._evals.reshape(k * d), means.new_ones(k * d)])

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    def __repr__(self):
        return f"GaussianMixture(n_components={self.n_components}, dim={self.dim}, dtype={self.means.dtype})"

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        """A copy on `device` with `dtype` (None keeps the current one)."""
        return GaussianMixture(*(p.to(device=device, dtype=dtype) for p in (self.weights, self.means, self.covs)))

    # -- the noised kernel: one code path for p_0 and every p_t ------------------------------
    def _check_x(self, x: Tensor) -> None:
        if not torch.is_tensor(x) or x.ndim != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (B, D={self.dim}), got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got {x.dtype} (write 1.0, not 1)")

    def _terms(self, x: Tensor, alpha: Tensor, sigma: Tensor):
        """Per-component quantities of sum_k w_k N(x; alpha mu_k, alpha^2 S_k + sigma^2 I).

        alpha, sigma: (B,). Returns log(w_k N_k(x)): (B, K), the responsibilities r: (B, K),
        z = diag(1/v_k) U_k^T (x - alpha mu_k): (B, K, D) with v_k = alpha^2 l_k + sigma^2 the
        noised eigenvalues, and the U_k side by side (D, K D) for `_from_eigenbasis`.
        """
        self._check_x(x)
        proj, spectrum, log_w = (
            p.to(device=x.device, dtype=x.dtype) for p in (self._proj, self._spectrum, self.log_weights)
        )
        b, (k, d) = x.shape[0], self.means.shape
        # both as single matrix products over all K components at once
        y = (torch.cat([x, append_dims(-alpha, 2)], dim=1) @ proj).view(b, k, d)
        v = (torch.stack([alpha**2, sigma**2], dim=1) @ spectrum).view(b, k, d)
        z = y / v
        log_n = -0.5 * (d * math.log(2 * math.pi) + v.log().sum(-1) + (z * y).sum(-1))
        log_joint = log_w + log_n
        return log_joint, torch.softmax(log_joint, dim=1), z, proj[:d]

    def _from_eigenbasis(self, coeffs: Tensor, rot: Tensor) -> Tensor:
        """sum_k U_k c_k for coeffs c: (B, K, D), as one (B, K D) @ (K D, D) product."""
        return coeffs.flatten(1) @ rot.T

    def _marginal_log_prob(self, x, alpha, sigma) -> Tensor:
        return torch.logsumexp(self._terms(x, alpha, sigma)[0], dim=1)

    def _marginal_score(self, x, alpha, sigma) -> Tensor:
        """sum_k r_k(x) * (-U_k diag(1/v_k) U_k^T (x - alpha mu_k)), r the responsibilities."""
        _, resp, z, rot = self._terms(x, alpha, sigma)
        return -self._from_eigenbasis(append_dims(resp, 3) * z, rot)

    def _coeffs(self, x: Tensor, t, sde: SDE) -> tuple[Tensor, Tensor]:
        """(alpha(t), sigma(t)): (B,) each, for t a float or a (B,) tensor."""
        self._check_x(x)
        return sde.marginal(batch_time(t, x))

    def _identity_coeffs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, sigma) = (1, 0): (B,) each, which turns p_t back into p_0."""
        self._check_x(x)
        one = x.new_ones(x.shape[0])
        return one, torch.zeros_like(one)

    # -- p_0 -------------------------------------------------------------------------------
    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x): (B,) for x: (B, D), by log-sum-exp over components."""
        return self._marginal_log_prob(x, *self._identity_coeffs(x))

    def score(self, x: Tensor) -> Tensor:
        """grad_x log p(x): (B, D), the responsibility-weighted sum of component scores."""
        return self._marginal_score(x, *self._identity_coeffs(x))

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n draws x = mu_k + U_k diag(sqrt(l_k)) z with k ~ w and z ~ N(0, I): (n, D)."""
        _check_n(n)
        k, d = self.n_components, self.dim
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, d, generator=generator, device=self.means.device, dtype=self.means.dtype)
        root = self._evecs * self._evals.sqrt().unsqueeze(1)  # U_k diag(sqrt l_k): (K, D, D)
        all_k = (z @ root.permute(2, 0, 1).reshape(d, k * d)).view(n, k, d)  # row k: root_k z
        return self.means[idx] + all_k[torch.arange(n, device=z.device), idx]

    # -- p_t -------------------------------------------------------------------------------
    def perturbed(self, mean_coeff: float, std: float) -> "GaussianMixture":
        """The law of a x_0 + s z, z ~ N(0, I): weights w_k, means a mu_k, covs a^2 S_k + s^2 I."""
        a, s = float(mean_coeff), float(std)
        if not (math.isfinite(a) and math.isfinite(s) and s >= 0):
            raise ValueError(f"mean_coeff must be finite and std finite and >= 0, got {mean_coeff}, {std}")
        eye = torch.eye(self.dim, device=self.means.device, dtype=self.means.dtype)
        return GaussianMixture(self.weights, a * self.means, a**2 * self.covs + s**2 * eye)

    def marginal(self, sde: SDE, t: float) -> "GaussianMixture":
        """p_t under `sde` as a GaussianMixture, for one time t in [0, T]."""
        check_time(t, 0.0, sde.T, "t")
        alpha, sigma = sde.marginal(torch.as_tensor(float(t), dtype=torch.float64))
        return self.perturbed(alpha, sigma)

    def marginal_log_prob(self, x: Tensor, t: float | Tensor, sde: SDE) -> Tensor:
        """log p_t(x): (B,), with t a float or a (B,) tensor (one time per sample)."""
        return self._marginal_log_prob(x, *self._coeffs(x, t, sde))

    def marginal_score(self, x: Tensor, t: float | Tensor, sde: SDE) -> Tensor:
        """grad_x log p_t(x): (B, D), with t a float or a (B,) tensor (one time per sample).

        t is not range-checked here (samplers call this in their inner loop)."""
        return self._marginal_score(x, *self._coeffs(x, t, sde))

    def score_fn(self, sde: SDE):
        """The exact score of p_t as a `score_fn(x, t)` for samplers; x: (B, D), t: (B,)."""
        return lambda x, t: self.marginal_score(x, t, sde)

    def denoiser(self, x: Tensor, t: float | Tensor, sde: SDE) -> Tensor:
        """E[x_0 | x_t = x]: (B, D). Equal to Tweedie's (x + sigma^2 score) / alpha, computed per
        component as mu_k + alpha S_k (alpha^2 S_k + sigma^2 I)^{-1} (x - alpha mu_k), so it
        stays accurate where alpha is small."""
        alpha, sigma = self._coeffs(x, t, sde)
        _, resp, z, rot = self._terms(x, alpha, sigma)
        evals, means = (p.to(device=x.device, dtype=x.dtype) for p in (self._evals, self.means))
        shrunk = append_dims(alpha, 3) * evals * z  # alpha l_k / (alpha^2 l_k + sigma^2) * U_k^T (x - alpha mu_k)
        return resp @ means + self._from_eigenbasis(append_dims(resp, 3) * shrunk, rot)


def _check_weights_and_means(weights: Tensor, means: Tensor) -> None:
    if weights.ndim != 1 or weights.shape[0] < 1:
        raise ValueError(f"weights must have shape (K,) with K >= 1, got {tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all() & (weights >= 0).all()):
        raise ValueError("weights must be finite and non-negative")
    if abs(float(weights.sum()) - 1.0) > 1e-6:
        raise ValueError(f"weights must sum to one (tolerance 1e-6), got {float(weights.sum())}")
    k = weights.shape[0]
    if means.ndim != 2 or means.shape[0] != k or means.shape[1] < 1:
        raise ValueError(f"means must have shape (K={k}, D) with D >= 1, got {tuple(means.shape)}")
    if not bool(torch.isfinite(means).all()):
        raise ValueError("means must be finite")


def _check_covs(covs: Tensor, k: int, d: int) -> tuple[Tensor, Tensor, Tensor]:
    """Check shape (k, d, d), symmetry and positive definiteness; return (covs, l, U)."""
    if covs.shape != (k, d, d):
        raise ValueError(f"covs must have shape (K={k}, D={d}, D={d}), got {tuple(covs.shape)}")
    if not bool(torch.isfinite(covs).all()):
        raise ValueError("covs must be finite")
    scale = covs.abs().amax(dim=(1, 2), keepdim=True)
    if bool(((covs - covs.transpose(1, 2)).abs() > 1e-6 * scale).any()):
        raise ValueError("covs must be symmetric (relative tolerance 1e-6)")
    covs = 0.5 * (covs + covs.transpose(1, 2))
    evals, evecs = torch.linalg.eigh(covs)
    if not bool((evals > 0).all()):
        raise ValueError(f"covs must be positive definite, smallest eigenvalue {float(evals.min()):g}")
    return covs, evals, evecs


# -- 2-D toys ---------------------------------------------------------------------------------
def _check_n(n: int, noise: float = 0.0) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")


def _uniform(n, generator, device, dtype) -> Tensor:
    return torch.rand(n, generator=generator, device=device, dtype=dtype)


def two_moons(n: int, *, generator=None, noise: float = 0.05, device=None, dtype=None) -> Tensor:
    """Two interleaved half circles (as scikit-learn's make_moons), centred, plus N(0, noise^2 I): (n, 2)."""
    _check_n(n, noise)
    theta = math.pi * _uniform(n, generator, device, dtype)
    upper = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
    x = torch.where(upper, torch.cos(theta), 1.0 - torch.cos(theta)) - 0.5
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta)) - 0.25
    points = torch.stack([x, y], dim=1)
    return points + noise * torch.randn(points.shape, generator=generator, device=device, dtype=dtype)


def swiss_roll(n: int, *, generator=None, noise: float = 0.05, device=None, dtype=None) -> Tensor:
    """A 2-D spiral (theta cos theta, theta sin theta) / 5, theta ~ U[1.5 pi, 4.5 pi], plus
    N(0, noise^2 I): (n, 2)."""
    _check_n(n, noise)
    theta = 1.5 * math.pi * (1.0 + 2.0 * _uniform(n, generator, device, dtype))
    points = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], dim=1) / 5.0
    return points + noise * torch.randn(points.shape, generator=generator, device=device, dtype=dtype)


def checkerboard(n: int, *, generator=None, device=None, dtype=None) -> Tensor:
    """Uniform on the 8 dark unit squares of a 4 x 4 board on [-2, 2]^2: (n, 2)."""
    _check_n(n)
    col = torch.randint(0, 4, (n,), generator=generator, device=device)
    row = 2 * torch.randint(0, 2, (n,), generator=generator, device=device) + col % 2
    corner = torch.stack([col, row], dim=1).to(dtype or torch.get_default_dtype()) - 2.0
    return corner + torch.rand(n, 2, generator=generator, device=device, dtype=corner.dtype)


def ring_of_gaussians(
    n_modes: int = 8, radius: float = 2.0, std: float = 0.1, *, dtype=None, device=None
) -> GaussianMixture:
    """n_modes equally weighted isotropic Gaussians N(mu_k, std^2 I) with means evenly spaced
    on a circle of the given radius."""
    if not isinstance(n_modes, int) or n_modes < 1:
        raise ValueError(f"n_modes must be a positive integer, got {n_modes!r}")
    radius, std = check_positive("radius", radius), check_positive("std", std)
    dtype = dtype or torch.get_default_dtype()
    angles = 2 * math.pi * torch.arange(n_modes, device=device, dtype=dtype) / n_modes
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    covs = std**2 * torch.eye(2, device=device, dtype=dtype).expand(n_modes, 2, 2)
    weights = torch.full((n_modes,), 1.0 / n_modes, device=device, dtype=dtype)
    return GaussianMixture(weights, means, covs)


def separated_modes(*, dtype=None, device=None) -> GaussianMixture:
    """Two far-apart unit Gaussians with unequal weights, the example of Song & Ermon (2019,
    Fig. 3): p = 1/5 N((-5, -5), I) + 4/5 N((5, 5), I) in R^2.

    The means are 10 sqrt(2) ~ 14.1 standard deviations apart, and log p at the saddle
    between them lies about 23.6 below its value at the light mode and 25.0 below the heavy
    one: plain Langevin chains never cross in practice and keep the proportions they started
    with, whereas annealed Langevin, which starts at noise levels where the modes overlap,
    recovers the weights 0.2 / 0.8.
    """
    dtype = dtype or torch.get_default_dtype()
    weights = torch.tensor([0.2, 0.8], device=device, dtype=dtype)
    means = torch.tensor([[-5.0, -5.0], [5.0, 5.0]], device=device, dtype=dtype)
    covs = torch.eye(2, device=device, dtype=dtype).expand(2, 2, 2)
    return GaussianMixture(weights, means, covs)
