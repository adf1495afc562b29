"""Forward SDEs of score-based models (Song et al., 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations") and the two drifts built from a score.

Every SDE here has an affine drift, so its perturbation kernel is Gaussian:

    p_{0t}(x_t | x_0) = N(x_t; alpha(t) x_0, sigma(t)^2 I),

with `alpha(t)` the mean coefficient and `sigma(t)` the std. Names follow score_sde
(`marginal_prob`, `prior_sampling`, `prior_logp`) and DPM-Solver's `NoiseScheduleVP`
(`marginal_log_mean_coeff`, `marginal_std`, `marginal_lambda`, `inverse_lambda`, with
lambda(t) = log alpha(t) - log sigma(t), the half log-SNR).

Shapes: `x: (B, *D)`, `t: (B,)` (a float is broadcast); per-sample outputs are `(B,)`.
"""

from __future__ import annotations

import abc
import math
import numbers
from typing import Callable

import torch
from torch import Tensor

from .utils import append_dims, batch_time, check_positive, check_time

ScoreFn = Callable[[Tensor, Tensor], Tensor]


class SDE(abc.ABC):
    """dx = f(x, t) dt + g(t) dw on t in [0, T]; samplers and losses use t in [eps, T]."""

    T: float = 1.0
    eps: float

    # -- the forward process ------------------------------------------------------------
    @abc.abstractmethod
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(x, t): (B, *D)."""

    @abc.abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        """g(t): (B,)."""

    @abc.abstractmethod
    def marginal_log_mean_coeff(self, t: Tensor) -> Tensor:
        """log alpha(t): (B,)."""

    @abc.abstractmethod
    def marginal_std(self, t: Tensor) -> Tensor:
        """sigma(t): (B,)."""

    @abc.abstractmethod
    def inverse_lambda(self, lambda_t: Tensor) -> Tensor:
        """The time t at which marginal_lambda(t) = lambda_t."""

    # -- derived quantities -------------------------------------------------------------
    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(alpha(t), sigma(t)) of the perturbation kernel, each of t's shape."""
        t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
        return self.marginal_log_mean_coeff(t).exp(), self.marginal_std(t)

    def marginal_prob(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean `alpha(t) x0`: (B, *D) and std `sigma(t)`: (B,) of p_{0t}(x_t | x_0)."""
        t = batch_time(t, x0)
        alpha, sigma = self.marginal(t)
        return append_dims(alpha, x0.ndim) * x0, sigma

    def perturb(self, x0: Tensor, t: Tensor | float, noise: Tensor) -> Tensor:
        """x_t = alpha(t) x0 + sigma(t) z for given noise z: (B, *D)."""
        mean, sigma = self.marginal_prob(x0, t)
        return mean + append_dims(sigma, x0.ndim) * noise

    def marginal_lambda(self, t: Tensor) -> Tensor:
        """lambda(t) = log alpha(t) - log sigma(t), half the log signal-to-noise ratio."""
        return self.marginal_log_mean_coeff(t) - self.marginal_std(t).log()

    def prior_std(self) -> float:
        """Std of the prior N(0, prior_std^2 I) that p_T is close to."""
        return 1.0

    def prior_sampling(self, shape, *, generator=None, device=None, dtype=None) -> Tensor:
        """Draw x_T ~ N(0, prior_std^2 I) of the given shape."""
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return self.prior_std() * z

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std^2 I) per sample: (B,)."""
        n = z[0].numel()
        s2 = self.prior_std() ** 2
        return -0.5 * n * math.log(2 * math.pi * s2) - z.flatten(1).pow(2).sum(1) / (2 * s2)

    def check_time(self, t: Tensor | float, name: str = "t") -> None:
        """ValueError unless every entry of t lies in [eps, T]."""
        check_time(t, self.eps, self.T, name)


class VPSDE(SDE):
    """Variance preserving SDE, dx = -beta(t)/2 x dt + sqrt(beta(t)) dw, with the linear
    schedule beta(t) = beta_min + t (beta_max - beta_min); DDPM (Ho et al., 2020) is its
    discretization. alpha(t)^2 + sigma(t)^2 = 1."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3):
        self.beta_0 = check_positive("beta_min", beta_min)
        self.beta_1 = check_positive("beta_max", beta_max)
        if beta_max <= beta_min:
            raise ValueError(f"beta_max must exceed beta_min, got {beta_max} <= {beta_min}")
        self.eps = check_positive("eps", eps)
        if self.eps >= self.T:
            raise ValueError(f"eps must be below T={self.T}, got {eps}")

    def __repr__(self):
        return f"{type(self).__name__}(beta_min={self.beta_0}, beta_max={self.beta_1}, eps={self.eps})"

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def drift(self, x, t):
        return -0.5 * append_dims(self.beta(batch_time(t, x)), x.ndim) * x

    def diffusion(self, t):
        return self.beta(t).sqrt()

    def marginal_log_mean_coeff(self, t):
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def marginal_std(self, t):
        # sqrt(1 - alpha^2) = sqrt(-expm1(2 log alpha)), accurate for small t
        return torch.sqrt(-torch.expm1(2.0 * self.marginal_log_mean_coeff(t)))

    def _t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        """Solve beta_0 t + (beta_1 - beta_0) t^2 / 2 = -2 log alpha for t >= 0."""
        two_l = 2.0 * (self.beta_1 - self.beta_0) * (-2.0 * log_alpha)
        return two_l / (torch.sqrt(self.beta_0**2 + two_l) + self.beta_0) / (self.beta_1 - self.beta_0)

    def inverse_lambda(self, lambda_t):
        # alpha^2 = 1 / (1 + exp(-2 lambda))
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lambda_t), -2.0 * lambda_t)
        return self._t_from_log_alpha(log_alpha)

    def discrete_betas(self, n: int) -> Tensor:
        """DDPM's betas for an n-step chain (Ho et al., 2020; score_sde's `discrete_betas`):
        beta_i = beta(t) / n on the grid t = 0, 1/(n-1), ..., 1, that is
        linspace(beta_min / n, beta_max / n, n): (n,) float64. For n = 1000 and the defaults this
        is DDPM's table linspace(1e-4, 0.02, 1000), bit for bit.

        A chain x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z needs every beta_i in (0, 1), so
        n must be an integer >= 2 with beta_max / n < 1 (n >= 21 for the defaults); any other n
        is a ValueError. For 2 <= n <= 20 the last beta is beta_max / n >= 1: alpha-bar reaches
        0 at n = 20 and has negative entries for every n from 2 to 19 (-1.66e-3 at index 5 for
        n = 10), so sqrt(1 - beta) is NaN; n = 1 would give the lone beta_min. We refuse such an
        n rather than rebuild the chain from the continuous schedule,
        beta_i = 1 - alpha(i/n)^2 / alpha((i-1)/n)^2 (valid for every n), because that chain is
        not DDPM's: at n = 1000 its betas differ from DDPM's by up to 2.1e-4 (9.9 % of the first
        beta) and its alpha-bar by up to 8.1e-4. That chain on any time grid is the forward
        transition of `samplers.forward_increments`, which `samplers.reverse_diffusion_step`
        reverses: to sample in 10 steps, pass a 10-step grid `ts` to a sampler."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2 or self.beta_1 / n >= 1.0:
            n_min = max(2, math.floor(self.beta_1) + 1)
            raise ValueError(f"n must be an integer >= {n_min} (every beta_i = beta(t) / n below 1, "
                             f"beta_max = {self.beta_1:g}), got {n!r}; for fewer steps, sample the "
                             "continuous SDE on a coarse time grid (samplers.reverse_diffusion_step)")
        return torch.linspace(self.beta_0 / n, self.beta_1 / n, n, dtype=torch.float64)

    def alphas_cumprod(self, n: int) -> Tensor:
        """DDPM's alpha-bar for an n-step chain: alpha-bar_i = prod_{j<=i} (1 - beta_j) with the
        betas of `discrete_betas(n)` (same n allowed): (n,) float64, index i = 0..n-1 holding
        DDPM's alpha-bar_{i+1}, all in (0, 1) and decreasing. It approximates the continuous
        alpha(t)^2 at t = (i + 1) / n to first order in 1/n: the largest gap is 8.1e-4 at
        n = 1000 and 0.045 at n = 21 (alpha-bar_n = 4.04e-5 against alpha(1)^2 = 4.32e-5 at
        n = 1000)."""
        return torch.cumprod(1.0 - self.discrete_betas(n), dim=0)


class SubVPSDE(VPSDE):
    """Sub-VP SDE, dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw.
    Same mean as VP, std sigma(t) = 1 - alpha(t)^2, never above VP's."""

    def diffusion(self, t):
        discount = -torch.expm1(-2 * self.beta_0 * t - (self.beta_1 - self.beta_0) * t**2)
        return torch.sqrt(self.beta(t) * discount)

    def marginal_std(self, t):
        return -torch.expm1(2.0 * self.marginal_log_mean_coeff(t))

    def inverse_lambda(self, lambda_t):
        # exp(lambda) = alpha / (1 - alpha^2)  =>  alpha = 2 e^l / (1 + sqrt(1 + 4 e^{2l}))
        half_log_root = 0.5 * torch.logaddexp(torch.zeros_like(lambda_t), 2.0 * lambda_t + math.log(4.0))
        log_alpha = lambda_t + math.log(2.0) - torch.nn.functional.softplus(half_log_root)
        return self._t_from_log_alpha(log_alpha)

    def discrete_betas(self, n: int) -> Tensor:
        raise NotImplementedError("the sub-VP SDE has no DDPM-style discrete chain")

    alphas_cumprod = discrete_betas


class VESDE(SDE):
    """Variance exploding SDE, dx = sqrt(d sigma^2(t) / dt) dw with the geometric
    sigma(t) = sigma_min (sigma_max / sigma_min)^t; NCSN (Song & Ermon, 2019) is its
    discretization. alpha(t) = 1; the prior is N(0, sigma_max^2 I).

    The kernel std is taken as sigma(t) (as in score_sde), so p_t is p_data convolved
    with N(0, sigma(t)^2 I) exactly and the reverse process between any s < t is exact.
    The price: at t = 0 the process starts from p_data * N(0, sigma_min^2 I), not from the
    data, since sigma(0) = sigma_min and the SDE adds only sigma(t)^2 - sigma_min^2 = int_0^t g^2
    after that; `GaussianMixture.marginal(VESDE(), 0)` is not p_data but the mixture with
    sigma_min^2 I added to every covariance. Started from the data, the std at t = 1e-3 would
    be sqrt(sigma(t)^2 - sigma_min^2) = 0.00131, not the kernel's sigma(1e-3) = 0.01009
    (defaults)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, eps: float = 1e-5):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if sigma_max <= sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
        self.eps = check_positive("eps", eps)
        if self.eps >= self.T:
            raise ValueError(f"eps must be below T={self.T}, got {eps}")
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)

    def __repr__(self):
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, eps={self.eps})"

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        return self.marginal_std(t) * math.sqrt(2.0 * self.log_ratio)

    def marginal_log_mean_coeff(self, t):
        return torch.zeros_like(t)

    def marginal_std(self, t):
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def inverse_lambda(self, lambda_t):
        return (-lambda_t - math.log(self.sigma_min)) / self.log_ratio

    def prior_std(self) -> float:
        return self.sigma_max

    def discrete_sigmas(self, n: int) -> Tensor:
        """NCSN's geometric ladder sigma_1 = sigma_max > ... > sigma_n = sigma_min."""
        if n < 2:
            raise ValueError(f"n must be an integer >= 2, got {n}")
        return torch.exp(torch.linspace(math.log(self.sigma_max), math.log(self.sigma_min), n, dtype=torch.float64))


def reverse_drift(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor | float) -> Tensor:
    """Drift of Anderson's (1982) reverse-time SDE, f(x, t) - g(t)^2 score(x, t), run
    backward in time: dx = [f - g^2 score] dt + g dw-bar. `t`: (B,) or a float."""
    t = batch_time(t, x)
    g2 = append_dims(sde.diffusion(t) ** 2, x.ndim)
    return sde.drift(x, t) - g2 * score_fn(x, t)


def probability_flow_drift(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor | float) -> Tensor:
    """Velocity of the probability-flow ODE, dx/dt = f(x, t) - g(t)^2 score(x, t) / 2,
    whose solutions share the SDE's marginals p_t (Song et al., 2021, eq. 13). `t`: (B,) or a float."""
    t = batch_time(t, x)
    g2 = append_dims(sde.diffusion(t) ** 2, x.ndim)
    return sde.drift(x, t) - 0.5 * g2 * score_fn(x, t)
