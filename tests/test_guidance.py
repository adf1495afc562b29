"""Conditional sampling: classifier guidance with the exact noisy-data classifier of a mixture,
and inpainting by replacement against the exact law of the discrete scheme."""

import math

import pytest
import torch

from course_lib import guidance, samplers
from course_lib.distributions import GaussianMixture
from course_lib.sde import VESDE, VPSDE

F64 = dict(dtype=torch.float64)


def two_classes() -> GaussianMixture:
    """Classes y = 0, 1 with weights 0.7 / 0.3 at (-3, 0) and (3, 0), covariance 0.5 I: a class-1
    draw lands at x_1 < 0 with probability Phi(-3 / sqrt(0.5)) ~ 1e-5."""
    covs = 0.5 * torch.eye(2, **F64).expand(2, 2, 2)
    return GaussianMixture(torch.tensor([0.7, 0.3], **F64), torch.tensor([[-3.0, 0.0], [3.0, 0.0]], **F64), covs)


def exact_log_classifier(mix: GaussianMixture, y: int, sde):
    """log p_t(y | x) = log w_y + log p_t(x | y) - log p_t(x); the class-conditional marginal
    p_t(x | y) is component y noised by the SDE."""
    component = GaussianMixture(torch.ones(1, **F64), mix.means[y:y + 1], mix.covs[y:y + 1])
    log_w = math.log(float(mix.weights[y]))
    return lambda x, t: log_w + component.marginal_log_prob(x, t, sde) - mix.marginal_log_prob(x, t, sde), component


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["VP", "VE"])
def test_guided_score_is_the_class_conditional_score(sde):
    """Bayes' rule: s_t(x) + grad log p_t(y | x) = grad log p_t(x | y), exactly."""
    mix = two_classes()
    log_p_y, component = exact_log_classifier(mix, 1, sde)
    guided = guidance.classifier_guided_score(mix.score_fn(sde), guidance.log_prob_grad(log_p_y), scale=1.0)
    x = 3 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), **F64)
    t = torch.rand(64, generator=torch.Generator().manual_seed(1), **F64) * (sde.T - sde.eps) + sde.eps
    torch.testing.assert_close(guided(x, t), component.marginal_score(x, t, sde), rtol=1e-8, atol=1e-8)


def test_guided_sampling_draws_the_requested_class():
    sde, mix, n = VPSDE(), two_classes(), 2000
    gen = torch.Generator().manual_seed(2)
    log_p_y, _ = exact_log_classifier(mix, 1, sde)
    ts = torch.linspace(sde.T, sde.eps, 201, **F64)
    guided = guidance.classifier_guided_score(mix.score_fn(sde), guidance.log_prob_grad(log_p_y), scale=1.0)
    x = samplers.euler_maruyama(guided, sde, sde.prior_sampling((n, 2), generator=gen, **F64), ts, generator=gen)
    # Under p(x | y = 1) the expected number of draws at x_1 < 0 is n * 1e-5 = 0.02; allowing
    # 0.5 % covers the sampler's discretization without letting a 30 % class mix pass.
    assert (x[:, 0] > 0).double().mean() > 0.995
    # and within the class, the component's mean (3, 0) and variance 0.5 within 4 SE
    assert ((x.mean(0) - torch.tensor([3.0, 0.0], **F64)).abs() < 4 * math.sqrt(0.5 / n)).all()
    assert ((x.var(0) - 0.5).abs() < 4 * 0.5 * math.sqrt(2 / n)).all()
    # unguided, the same sampler draws class 1 with its prior weight 0.3 (binomial SE)
    x = samplers.euler_maruyama(mix.score_fn(sde), sde, sde.prior_sampling((n, 2), generator=gen, **F64), ts,
                                generator=gen)
    assert abs((x[:, 0] > 0).double().mean() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)


def replacement_law(sde, mu, cov, x1, ts):
    """Exact mean and variance of x_2 under `inpaint` with the reverse-diffusion predictor and no
    corrector, for data N(mu, cov) with known x_1. Before each step t -> s the known coordinate
    is a fresh x_1(t) ~ N(alpha_t x1, sigma_t^2), independent of x_2, and the score is linear:
    s(x) = -P (x - alpha_t mu), P = (alpha_t^2 cov + sigma_t^2 I)^-1. So with c = 1 - f_i - G_i^2 P22,
        m' = c m + G_i^2 alpha_t (P22 mu_2 - P21 (x1 - mu_1)),
        v' = c^2 v + G_i^4 P21^2 sigma_t^2 + G_i^2 (no G_i^2 on the last, noise-free step)."""
    m, v = 0.0, sde.prior_std() ** 2
    for i in range(len(ts) - 1):
        t, s = samplers.levels(sde, ts[i:i + 2])
        f, g = samplers.forward_increments(t, s)
        alpha, sigma = t.alpha, t.sigma
        prec = torch.linalg.inv(alpha**2 * cov + sigma**2 * torch.eye(2, **F64))
        c = 1 - f - g**2 * float(prec[1, 1])
        m = c * m + g**2 * alpha * float(prec[1, 1] * mu[1] - prec[1, 0] * (x1 - mu[0]))
        v = c**2 * v + g**4 * float(prec[1, 0]) ** 2 * sigma**2 + (g**2 if i < len(ts) - 2 else 0.0)
    return m, v


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["VP", "VE"])
def test_inpainting_follows_the_exact_law_of_the_replacement_scheme(sde):
    """The sampled x_2 has the mean and variance of `replacement_law` within 4 Monte Carlo SE.

    That law is not the conditional N(0.1, 0.36) of x_2 | x_1 = 1: replacement scores x_2 with
    p_t(x_2 | x_1(t)) for a random x_1(t) instead of p_t(x_2 | x_1), which biases it for
    correlated coordinates (Song et al., 2021, App. I.2 call it an approximation); the limit for
    many steps is mean -0.050, variance 0.497 (VP, 1000 steps) here. With independent coordinates it is exact
    (checked below)."""
    mu, cov, x1, n = torch.tensor([0.5, -0.3], **F64), torch.tensor([[1.0, 0.8], [0.8, 1.0]], **F64), 1.0, 4000
    mix = GaussianMixture(torch.ones(1, **F64), mu[None], cov[None])
    ts = torch.linspace(sde.T, sde.eps, 101, **F64)
    x_known = torch.tensor([[x1, 0.0]], **F64).expand(n, 2)
    x = guidance.inpaint(mix.score_fn(sde), sde, x_known, torch.tensor([1.0, 0.0]), ts, n_corrector_steps=0,
                         generator=torch.Generator().manual_seed(3))
    assert torch.equal(x[:, 0], x_known[:, 0])
    m, v = replacement_law(sde, mu, cov, x1, ts)
    assert abs(x[:, 1].mean() - m) < 4 * math.sqrt(v / n)
    assert abs(x[:, 1].var() - v) < 4 * v * math.sqrt(2 / (n - 1))  # x_2 is exactly Gaussian here


def test_inpainting_is_exact_for_independent_coordinates():
    """With cov diagonal x_2's score ignores x_1, so inpainting samples N(mu_2, cov_22) up to the
    predictor's discretization: at 500 steps `replacement_law` gives mean -0.2995 and variance
    0.4036, within 0.4 SE (n = 3000) of the target."""
    sde, mu, cov, n = VPSDE(), torch.tensor([0.5, -0.3], **F64), torch.diag(torch.tensor([1.0, 0.4], **F64)), 3000
    mix = GaussianMixture(torch.ones(1, **F64), mu[None], cov[None])
    x_known = torch.tensor([[2.0, 0.0]], **F64).expand(n, 2)
    x = guidance.inpaint(mix.score_fn(sde), sde, x_known, torch.tensor([1.0, 0.0]),
                         torch.linspace(sde.T, sde.eps, 501, **F64), n_corrector_steps=0,
                         generator=torch.Generator().manual_seed(4))
    assert abs(x[:, 1].mean() + 0.3) < 4 * math.sqrt(0.4 / n)
    assert abs(x[:, 1].var() - 0.4) < 4 * 0.4 * math.sqrt(2 / (n - 1))


def test_bad_arguments_raise():
    sde, mix = VPSDE(), two_classes()
    ts = torch.linspace(sde.T, sde.eps, 4, **F64)
    x = torch.zeros(3, 2, **F64)
    with pytest.raises(ValueError):
        guidance.inpaint(mix.score_fn(sde), sde, x, torch.tensor([0.5, 1.0]), ts)  # not 0/1
    with pytest.raises(ValueError):
        guidance.inpaint(mix.score_fn(sde), sde, x, torch.ones(3), ts)  # does not broadcast
    with pytest.raises(ValueError):
        guidance.inpaint(mix.score_fn(sde), sde, x, torch.ones(2), ts.flip(0))  # increasing grid
    with pytest.raises(ValueError):
        guidance.classifier_guided_score(mix.score_fn(sde), mix.score_fn(sde), scale=-1.0)
