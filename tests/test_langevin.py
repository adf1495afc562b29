"""Langevin dynamics against closed forms: the biased stationary law of ULA on a Gaussian,
the collapse of noiseless gradient ascent, and annealing across separated modes."""

import math

import pytest
import torch

from course_lib.distributions import GaussianMixture, separated_modes
from course_lib.langevin import (annealed_langevin, langevin_dynamics, langevin_step, mala,
                                 mala_log_accept_ratio)


def test_ula_stationary_variance_is_the_biased_closed_form():
    """For N(0, s2) the move x' = x + (eta/2)(-x/s2) + sqrt(eta) z is AR(1), x' = a x + sqrt(eta) z
    with a = 1 - eta / (2 s2); its stationary variance is v = eta / (1 - a^2) = s2 / (1 - eta / (4 s2)),
    above s2: the discretization bias of unadjusted Langevin."""
    s2 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    eta, n = 0.5, 20_000
    gen = torch.Generator().manual_seed(0)
    x = langevin_dynamics(lambda x: -x / s2, torch.zeros(n, 2, dtype=torch.float64), step_size=eta,
                          n_steps=60, generator=gen)  # a^(2*60) <= 0.75^120 ~ 1e-15: burn-in complete
    v = s2 / (1 - eta / (4 * s2))
    var_se = v * math.sqrt(2 / (n - 1))  # SE of a Gaussian sample variance
    assert ((x.var(0) - v).abs() < 4 * var_se).all(), (x.var(0), v)
    assert ((x.var(0) - s2).abs() > 4 * var_se).all()  # the bias is resolved, not hidden in noise
    assert (x.mean(0).abs() < 4 * (v / n).sqrt()).all()


def test_noiseless_gradient_ascent_collapses_to_the_mode():
    """Without noise the same update is x_k = a^k x_0 exactly: every chain goes to the mode 0 and
    the spread vanishes, whereas Langevin keeps the variance s2 / (1 - eta / (4 s2))."""
    s2, eta, k = 1.0, 0.5, 60
    x0 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    x = langevin_dynamics(lambda x: -x / s2, x0, step_size=eta, n_steps=k, temperature=0.0)
    torch.testing.assert_close(x, (1 - eta / (2 * s2)) ** k * x0, rtol=1e-12, atol=1e-300)
    assert x.var(0).max() < 1e-12


def test_mala_is_exactly_unbiased_where_ula_is_not():
    """On N(0, s2) with eta = 1 (s2 = 1: ULA's variance is s2 / (1 - 1/4) = 4/3; s2 = 0.5: it is
    1.0 = 2 s2), chains started from p stay exactly distributed as p under MALA, so the sample
    variance of n independent chains is within its Gaussian SE s2 sqrt(2 / (n - 1)) of s2."""
    s2 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    eta, n = 1.0, 20_000
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64) * s2.sqrt()
    accepted = []
    x = mala(lambda x: -(x.square() / (2 * s2)).sum(1), lambda x: -x / s2, x0, step_size=eta, n_steps=50,
             generator=gen, callback=lambda info: accepted.append(info["accepted"].double().mean()))
    se = s2 * math.sqrt(2 / (n - 1))
    assert ((x.var(0) - s2).abs() < 4 * se).all(), x.var(0)
    assert 0.5 < float(torch.stack(accepted).mean()) < 0.95  # moves do happen
    y = langevin_dynamics(lambda x: -x / s2, x0, step_size=eta, n_steps=50, generator=gen)
    v = s2 / (1 - eta / (4 * s2))
    assert ((y.var(0) - v).abs() < 4 * v * math.sqrt(2 / (n - 1))).all()
    assert ((y.var(0) - s2) > 10 * se).all()  # the same step without the correction is biased


def test_mala_converges_from_a_far_start_and_ignores_the_normalizing_constant():
    """From x0 = 4 the chains reach N(0, 1) (mean and variance within 4 SE); shifting log p by a
    constant changes nothing, draw for draw."""
    n = 20_000
    x0 = torch.full((n, 1), 4.0, dtype=torch.float64)
    run = lambda c: mala(lambda x: -0.5 * x.square().sum(1) + c, lambda x: -x, x0,  # noqa: E731
                         step_size=0.8, n_steps=200, generator=torch.Generator().manual_seed(5))
    x = run(0.0)
    assert abs(float(x.mean())) < 4 / math.sqrt(n) and abs(float(x.var()) - 1) < 4 * math.sqrt(2 / n)
    torch.testing.assert_close(run(123.0), x, rtol=0, atol=0)


def test_mala_log_accept_ratio_by_hand():
    """N(0, 1), eta = 1, x = 0, y = 1: log p(y) - log p(x) = -1/2, log q(y | x) = -1/2 (the drift
    at 0 is 0), log q(x | y) = -(0 - 1 + 1/2)^2 / 2 = -1/8; the ratio is -1/8. It is antisymmetric
    in (x, y)."""
    x, y = torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    lp = lambda v: -0.5 * v.square().sum(1)  # noqa: E731
    r = mala_log_accept_ratio(x, y, lp(x), lp(y), -x, -y, 1.0)
    torch.testing.assert_close(r, torch.tensor([-0.125], dtype=torch.float64))
    gen = torch.Generator().manual_seed(6)
    x, y = torch.randn(8, 3, 2, generator=gen, dtype=torch.float64), torch.randn(8, 3, 2, generator=gen, dtype=torch.float64)
    lp = lambda v: -v.flatten(1).pow(4).sum(1)  # noqa: E731
    score = lambda v: -4 * v.pow(3)  # noqa: E731
    forward = mala_log_accept_ratio(x, y, lp(x), lp(y), score(x), score(y), 0.3)
    backward = mala_log_accept_ratio(y, x, lp(y), lp(x), score(y), score(x), 0.3)
    assert forward.shape == (8,)
    torch.testing.assert_close(forward, -backward, rtol=1e-12, atol=1e-12)


def mixture() -> GaussianMixture:
    """Song & Ermon's (2019, Fig. 3) example: weights 0.2 / 0.8 at (-5, -5) and (5, 5), unit covariance."""
    return separated_modes(dtype=torch.float64)


def test_separated_modes_is_song_and_ermons_mixture_with_a_high_barrier():
    mix = mixture()
    assert mix.dim == 2 and mix.means.dtype == torch.float64
    torch.testing.assert_close(mix.weights, torch.tensor([0.2, 0.8], dtype=torch.float64))
    torch.testing.assert_close(mix.means, torch.tensor([[-5.0, -5.0], [5.0, 5.0]], dtype=torch.float64))
    torch.testing.assert_close(mix.covs, torch.eye(2, dtype=torch.float64).expand(2, 2, 2))
    # along the diagonal x = (t, t): log p = log(0.2 e^{-(t+5)^2} + 0.8 e^{-(t-5)^2}) - log(2 pi);
    # its minimum (the saddle) lies 23.6 below the light peak and 25.0 below the heavy one
    t = torch.linspace(-6, 6, 120_001, dtype=torch.float64)
    log_p = mix.log_prob(torch.stack([t, t], dim=1))
    saddle = log_p[t.abs() < 4].min()
    assert abs(log_p[t < 0].max() - saddle - 23.6) < 0.05 and abs(log_p[t > 0].max() - saddle - 25.0) < 0.05
    assert separated_modes(dtype=torch.float32).means.dtype == torch.float32


def noised_score(mix: GaussianMixture):
    """Exact score of p_sigma = p * N(0, sigma^2 I); one sigma per call, as the sampler uses it."""
    return lambda x, sigma: mix.perturbed(1.0, float(sigma[0])).score(x)


def test_annealed_langevin_recovers_weights_where_plain_langevin_cannot():
    mix, n = mixture(), 2000
    gen = torch.Generator().manual_seed(2)
    weight_se = math.sqrt(0.8 * 0.2 / n)  # binomial SE of the fraction in the heavy mode
    # annealed: a geometric ladder from sigma = 20 (modes merged) to 0.1, from uniform noise
    sigmas = torch.exp(torch.linspace(math.log(20.0), math.log(0.1), 10, dtype=torch.float64))
    x0 = 8 * (2 * torch.rand(n, 2, generator=gen, dtype=torch.float64) - 1)
    x = annealed_langevin(noised_score(mix), x0, sigmas, eps=5e-3, n_steps_each=100, generator=gen)
    heavy = (x.sum(1) > 0).double().mean()
    assert abs(heavy - 0.8) < 4 * weight_se, heavy
    # plain Langevin on p itself from the light mode: the 14-unit gap between unit-variance
    # modes is never crossed (the density between them is ~e^-24 of the peaks)
    start = torch.tensor([-5.0, -5.0], dtype=torch.float64) + torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x = langevin_dynamics(mix.score, start, step_size=0.1, n_steps=1000, generator=gen)
    heavy = (x.sum(1) > 0).double().mean()
    assert heavy < 0.8 - 20 * weight_se, heavy
    assert x.var(0).min() > 0.5  # but it did sample the light mode (unit variance) locally


def test_final_denoise_is_tweedie():
    """The last step x + sigma_L^2 s(x, sigma_L) is E[x_0 | x]: for one Gaussian N(m, c I) it is
    m + c / (c + sigma^2) (x - m), whose spread is sqrt(c / (c + sigma^2)) of x's."""
    sigma, m, c = 0.5, 1.0, 1.0
    score = lambda x, s: -(x - m) / (c + s[:, None] ** 2)  # noqa: E731
    x0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    # eps = 1e-300 makes the one Langevin move a no-op in float64 (its noise is 1e-150), so
    # only the denoising step acts on x0
    x = annealed_langevin(score, x0, torch.tensor([sigma], dtype=torch.float64), n_steps_each=1, eps=1e-300)
    torch.testing.assert_close(x, m + c / (c + sigma**2) * (x0 - m), rtol=1e-12, atol=1e-12)


def test_bad_arguments_raise():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        langevin_dynamics(lambda x: x, x, step_size=0.0, n_steps=1)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        langevin_dynamics(lambda x: x, x, step_size=0.1, n_steps=0)
    for temperature in (-1.0, float("nan"), None):
        with pytest.raises(ValueError, match="temperature must be a number >= 0"):
            langevin_dynamics(lambda x: x, x, step_size=0.1, n_steps=1, temperature=temperature)
    with pytest.raises(ValueError, match="step_size"):  # a negative step would take sqrt(-eta)
        langevin_step(x, x, -0.1)
    with pytest.raises(ValueError, match="temperature"):
        langevin_step(x, x, 0.1, temperature=-1.0)
    with pytest.raises(ValueError, match="step_size"):
        mala_log_accept_ratio(x, x, x.sum(1), x.sum(1), x, x, 0.0)
    with pytest.raises(ValueError, match="step_size"):
        mala(lambda x: x.sum(1), lambda x: x, x, step_size=-1.0, n_steps=1)
    with pytest.raises(ValueError, match="n_steps"):
        mala(lambda x: x.sum(1), lambda x: x, x, step_size=0.1, n_steps=2.5)
    with pytest.raises(ValueError):
        annealed_langevin(lambda x, s: x, x, torch.tensor([0.1, 1.0]))  # increasing
    with pytest.raises(ValueError):
        annealed_langevin(lambda x, s: x, x, torch.tensor([1.0, 0.0]))  # not positive
