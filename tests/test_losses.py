"""Score-matching losses against closed forms on Gaussians and Monte Carlo identities on mixtures.

Monte Carlo comparisons are paired where possible (common random numbers: the same x and the
same generator seed for both score functions) and use 4.5 standard errors, so a correct
implementation fails one comparison with probability below 1e-5.
"""

import math

import pytest
import scipy.integrate
import torch

from course_lib.distributions import GaussianMixture
from course_lib.losses import (
    denoising_score_matching_loss,
    dsm_loss,
    implicit_score_matching_loss,
    likelihood_weighting,
    ncsn_loss,
    sliced_score_matching_loss,
    std_squared_weighting,
)
from course_lib.sde import VESDE, VPSDE
from course_lib.utils import rademacher_like

F64 = torch.float64
N_SE = 4.5
MEAN = torch.tensor([0.5, -1.0], dtype=F64)
COV = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
PREC = torch.linalg.inv(COV)
GAUSS = GaussianMixture(torch.ones(1, dtype=F64), MEAN[None], COV[None])
MIXTURE = GaussianMixture(torch.tensor([0.3, 0.7], dtype=F64), torch.tensor([[-1.5, 0.0], [1.0, 1.0]], dtype=F64),
                          torch.stack([0.2 * torch.eye(2, dtype=F64), COV]))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_score(x, sigma=0.0):
    """grad log N(x; m, S + sigma^2 I) = -(S + sigma^2 I)^{-1} (x - m)."""
    return -(x - MEAN) @ torch.linalg.inv(COV + sigma**2 * torch.eye(2, dtype=F64))


# score fields that are wrong in different ways: scaled and shifted copies of a correct one
PERTURBATIONS = [lambda s: 1.3 * s, lambda s: 0.7 * s, lambda s: s + torch.tensor([0.5, -0.5], dtype=F64)]


def paired_mean_and_se(values: list[float]) -> tuple[float, float]:
    v = torch.tensor(values, dtype=F64)
    return float(v.mean()), float(v.std() / math.sqrt(len(v)))


# -- implicit and sliced -------------------------------------------------------------------------
def test_implicit_loss_of_exact_score_has_closed_form():
    # E[tr(-S^-1) + ||S^-1 (x - m)||^2 / 2] = -tr(S^-1) + tr(S^-1) / 2 = -tr(S^-1) / 2
    n = 20_000
    x = GAUSS.sample(n, generator=gen(0))
    loss = implicit_score_matching_loss(exact_score, x)
    # the trace is constant; u^T S^-1 u / 2 with u ~ N(0, I) has variance 2 tr(S^-2) / 4
    se = math.sqrt(2 * torch.trace(PREC @ PREC) / 4 / n)
    assert abs(float(loss.detach()) + float(torch.trace(PREC)) / 2) < N_SE * se


def test_implicit_loss_trains_to_the_empirical_gaussian_fit():
    # for s(x) = W x + b the sample loss tr(W) + mean ||W x + b||^2 / 2 is stationary at
    # W = -Sigma_hat^{-1}, b = -W m_hat (biased sample covariance): the gradient through the exact
    # trace (create_graph=True) must vanish there up to float64 round-off
    x = GAUSS.sample(500, generator=gen(1))
    m_hat = x.mean(0)
    cov_hat = (x - m_hat).T @ (x - m_hat) / x.shape[0]
    w = (-torch.linalg.inv(cov_hat)).requires_grad_(True)
    b = (-w.detach() @ m_hat).requires_grad_(True)
    implicit_score_matching_loss(lambda y: y @ w.T + b, x).backward()
    # entries of W and b are O(1-10); round-off of a 500-term mean is ~1e-13
    assert w.grad.abs().max() < 1e-10 and b.grad.abs().max() < 1e-10


def nonlinear_score(x):
    """A score field with a position-dependent Jacobian, so the trace estimator has variance."""
    return -torch.tanh(x @ torch.tensor([[1.0, 0.4], [-0.2, 0.8]], dtype=F64)) + 0.3 * x.pow(2).flip(1)


@pytest.mark.parametrize("projection, variance_reduced, n_projections", [
    (rademacher_like, False, 1), (torch.randn_like, False, 1), (rademacher_like, True, 1), (torch.randn_like, True, 3),
])
def test_sliced_loss_is_unbiased_for_implicit_loss(projection, variance_reduced, n_projections):
    # paired over 200 batches: same x for both, so only the projection noise remains
    diffs = []
    for r in range(200):
        x = GAUSS.sample(64, generator=gen(100 + r))
        sliced = sliced_score_matching_loss(nonlinear_score, x, projection=projection, n_projections=n_projections,
                                            variance_reduced=variance_reduced, generator=gen(10_000 + r))
        diffs.append(float((sliced - implicit_score_matching_loss(nonlinear_score, x)).detach()))
    mean, se = paired_mean_and_se(diffs)
    assert se > 0 and abs(mean) < N_SE * se


@pytest.mark.parametrize("loss", ["implicit", "sliced", "sliced_vr"])
@pytest.mark.parametrize("perturb", PERTURBATIONS)
def test_exact_score_minimizes_implicit_and_sliced(loss, perturb):
    # J(s) - J(s*) estimates E||s - s*||^2 / 2 >= 0.045 (scale 0.7: 0.09 E||s*||^2 / 2 = 0.09 tr(S^-1) / 2);
    # its MC error with 4000 paired samples is below 0.01
    x = GAUSS.sample(4000, generator=gen(2))

    def value(score_fn):
        if loss == "implicit":
            return implicit_score_matching_loss(score_fn, x)
        return sliced_score_matching_loss(score_fn, x, variance_reduced=loss == "sliced_vr", generator=gen(3))
    assert value(lambda y: perturb(exact_score(y))).detach() > value(exact_score).detach()


# -- denoising -----------------------------------------------------------------------------------
@pytest.mark.parametrize("perturb", PERTURBATIONS)
def test_exact_noised_score_minimizes_dsm_and_ncsn(perturb):
    # the DSM minimizer at sigma is the score of N(m, S + sigma^2 I); the gap E||s - s*||^2 / 2
    # is >= 0.03 here, against an MC error below 0.01 with 8000 paired samples
    x = GAUSS.sample(8000, generator=gen(4))
    sigma = 0.5
    exact = denoising_score_matching_loss(lambda y: exact_score(y, sigma), x, sigma, generator=gen(5))
    worse = denoising_score_matching_loss(lambda y: perturb(exact_score(y, sigma)), x, sigma, generator=gen(5))
    assert worse > exact
    sigmas = torch.tensor([1.0, 0.5, 0.25], dtype=F64)
    ncsn_exact = ncsn_loss(lambda y, s: torch.stack([exact_score(y_i, float(s_i)) for y_i, s_i in zip(y, s)]),
                           x[:2000], sigmas, generator=gen(6))
    ncsn_worse = ncsn_loss(lambda y, s: perturb(torch.stack([exact_score(y_i, float(s_i)) for y_i, s_i in zip(y, s)])),
                           x[:2000], sigmas, generator=gen(6))
    assert ncsn_worse > ncsn_exact


def test_vincent_dsm_equals_explicit_sm_up_to_a_constant():
    # Vincent (2011): DSM_sigma(s) = ESM_sigma(s) + C with ESM against the score of p_sigma, so
    # DSM(s1) - DSM(s2) = ESM(s1) - ESM(s2); DSM by the library, ESM by sampling p_sigma directly
    sigma = 0.6
    noised = MIXTURE.perturbed(1.0, sigma)
    s1 = lambda y: -y / (1.0 + sigma**2)                      # a single-Gaussian guess
    s2 = lambda y: 0.8 * noised.score(y) + 0.2                # a shrunk, shifted true score
    dsm_diffs, esm_diffs = [], []
    for r in range(60):
        x = MIXTURE.sample(500, generator=gen(200 + r))
        dsm_diffs.append(float(denoising_score_matching_loss(s1, x, sigma, generator=gen(300 + r))
                               - denoising_score_matching_loss(s2, x, sigma, generator=gen(300 + r))))
        y = noised.sample(500, generator=gen(400 + r))
        target = noised.score(y)
        esm_diffs.append(float(((s1(y) - target).pow(2).sum(1) - (s2(y) - target).pow(2).sum(1)).mean() / 2))
    (dsm, dsm_se), (esm, esm_se) = paired_mean_and_se(dsm_diffs), paired_mean_and_se(esm_diffs)
    assert abs(dsm - esm) < N_SE * math.hypot(dsm_se, esm_se)
    assert abs(esm) > 10 * esm_se  # the two score functions really differ, so the check has power


@pytest.mark.parametrize("perturb", PERTURBATIONS)
@pytest.mark.parametrize("weighting", [std_squared_weighting, likelihood_weighting])
def test_exact_marginal_score_minimizes_dsm_loss(perturb, weighting):
    sde = VPSDE()
    x = MIXTURE.sample(4000, generator=gen(7))
    exact = dsm_loss(MIXTURE.score_fn(sde), sde, x, weighting=weighting, generator=gen(8))
    worse = dsm_loss(lambda y, t: perturb(MIXTURE.marginal_score(y, t, sde)), sde, x, weighting=weighting,
                     generator=gen(8))
    assert worse > exact


@pytest.mark.parametrize("sde", [VPSDE(eps=1e-2), VESDE(sigma_max=5.0, eps=1e-2), VPSDE(eps=0.3)], ids=repr)
def test_importance_sampling_keeps_the_expectation(sde):
    # same expectation with t ~ U[eps, T] and t ~ q, q proportional to g^2 / sigma^2, under the
    # likelihood weighting; independent batches, so the SEs add in quadrature. At eps = 0.3 a
    # dropped (T - eps) in the ratio would scale the weighted estimate by 1 / 0.7
    score_fn = lambda y, t: 0.9 * MIXTURE.marginal_score(y, t, sde)
    plain, weighted = [], []
    for r in range(100):
        x = MIXTURE.sample(256, generator=gen(500 + r))
        plain.append(float(dsm_loss(score_fn, sde, x, weighting=likelihood_weighting, generator=gen(600 + r))))
        weighted.append(float(dsm_loss(score_fn, sde, x, weighting=likelihood_weighting, importance_sampling=True,
                                       generator=gen(700 + r))))
    (m1, se1), (m2, se2) = paired_mean_and_se(plain), paired_mean_and_se(weighted)
    assert abs(m1 - m2) < N_SE * math.hypot(se1, se2)
    if isinstance(sde, VPSDE) and sde.eps < 0.1:
        # g^2 / sigma^2 ~ 1/t near 0 makes the plain estimator heavy-tailed; sampling t from it
        # leaves the bounded sigma^2 ||s + z / sigma||^2: a much smaller spread
        assert se2 < 0.5 * se1


# -- closed forms with the zero score ------------------------------------------------------------
# With s = 0 the loss no longer depends on x: ||s + z / sigma||^2 = ||z||^2 / sigma^2, E||z||^2 = D.
# The loss is a mean over the batch, so its standard error is read off R independent batches.
D, BATCH, REPEATS = 3, 2048, 40


def zero_score(y, t):
    return torch.zeros_like(y)


def batch_mean_and_se(loss_of_batch) -> tuple[float, float]:
    return paired_mean_and_se([float(loss_of_batch(gen(900 + r))) for r in range(REPEATS)])


def test_ncsn_loss_of_zero_score_is_half_the_dimension():
    # lambda(sigma) ||0 + z / sigma||^2 / 2 = ||z||^2 / 2 at every sigma: expectation D / 2. With
    # lambda = 1 it would be D / 2 E[1 / sigma^2] = 7 D / 2 here, without the 1/2 it would be D.
    x = torch.zeros(BATCH, D, dtype=F64)
    sigmas = torch.tensor([1.0, 0.5, 0.25], dtype=F64)
    mean, se = batch_mean_and_se(lambda g: ncsn_loss(zero_score, x, sigmas, generator=g))
    # ||z||^2 / 2 has std sqrt(2 D) / 2 = 1.22: se ~ 1.22 / sqrt(BATCH * REPEATS) = 0.004; 4.5 estimated
    # standard errors (t distribution, 39 degrees of freedom): a 6e-5 chance of failing by bad luck
    assert abs(mean - D / 2) < N_SE * se



def test_ncsn_loss_weighting_replaces_sigma_squared():
    # weighting=sigma^2 is the default exactly (same draws); lambda = 1 on the zero score gives
    # D / 2 E[1 / sigma^2] = D / 2 (1 + 4 + 16) / 3 = 7 D / 2, the figure quoted above
    x = torch.zeros(BATCH, D, dtype=F64)
    sigmas = torch.tensor([1.0, 0.5, 0.25], dtype=F64)
    default = ncsn_loss(nonlinear_ncsn_score, x + 0.3, sigmas, generator=gen(950))
    explicit = ncsn_loss(nonlinear_ncsn_score, x + 0.3, sigmas, generator=gen(950), weighting=lambda s: s**2)
    torch.testing.assert_close(explicit, default, rtol=1e-12, atol=0)
    mean, se = batch_mean_and_se(lambda g: ncsn_loss(zero_score, x, sigmas, generator=g, weighting=torch.ones_like))
    assert abs(mean - 7 * D / 2) < N_SE * se
    with pytest.raises(ValueError, match="weighting must map sigma"):
        ncsn_loss(zero_score, x, sigmas, weighting=lambda s: s.sum())


def nonlinear_ncsn_score(y, s):
    return -torch.tanh(y) / s[:, None] + 0.1 * y.flip(1)

def weight_over_variance(sde, weighting):
    """lambda(t) / sigma(t)^2 written from the SDE's own g and sigma, independently of the library's
    weighting functions: 1 for sigma^2, g^2 / sigma^2 for the likelihood weighting."""
    if weighting is std_squared_weighting:
        return lambda t: 1.0

    def ratio(t):
        t = torch.tensor([t], dtype=F64)
        return float(sde.diffusion(t) ** 2 / sde.marginal_std(t) ** 2)
    return ratio


@pytest.mark.parametrize("importance_sampling", [False, True], ids=["uniform-t", "importance-t"])
@pytest.mark.parametrize("weighting", [std_squared_weighting, likelihood_weighting], ids=["sigma2", "g2"])
@pytest.mark.parametrize("sde", [VPSDE(), VPSDE(eps=0.3), VESDE(), VESDE(sigma_max=5.0, eps=0.3)], ids=repr)
def test_dsm_loss_of_zero_score_matches_quadrature(sde, weighting, importance_sampling):
    # E_{t ~ U[eps, T]}[lambda(t) E||z||^2 / sigma(t)^2] / 2 = (D / 2) int_eps^T lambda / sigma^2 dt / (T - eps).
    # eps = 0.3 makes a dropped (T - eps) in the importance ratio a 30 % error instead of 0.1 %.
    integral, _ = scipy.integrate.quad(weight_over_variance(sde, weighting), sde.eps, sde.T,
                                       points=[min(10 * sde.eps, 0.5)], limit=200)
    expected = D / 2 * integral / (sde.T - sde.eps)
    x = torch.zeros(BATCH, D, dtype=F64)
    mean, se = batch_mean_and_se(lambda g: dsm_loss(zero_score, sde, x, weighting=weighting,
                                                    importance_sampling=importance_sampling, generator=g))
    # quad's error is ~1e-10, far below se; 4.5 standard errors estimated from REPEATS batch means
    # (nearly normal by the CLT; t distribution, 39 degrees of freedom: a 6e-5 chance of failing by bad luck)
    assert se > 0 and abs(mean - expected) < N_SE * se, (mean, expected, se)


# -- validation ----------------------------------------------------------------------------------
def test_bad_input_names_the_argument():
    x = torch.randn(8, 2, dtype=F64)
    score = lambda y: -y
    with pytest.raises(ValueError, match="sigma"):
        denoising_score_matching_loss(score, x, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        denoising_score_matching_loss(score, x, -1.0)
    with pytest.raises(ValueError, match="sigmas"):
        ncsn_loss(lambda y, s: -y, x, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="x"):
        implicit_score_matching_loss(score, torch.randn(8))
    with pytest.raises(ValueError, match="x"):
        implicit_score_matching_loss(score, torch.randn(8, 1, 2, 2))
    with pytest.raises(ValueError, match="x"):
        dsm_loss(lambda y, t: -y, VPSDE(), torch.randn(8))
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(lambda y, t: -y, VPSDE(), x, weighting="likelihood")
    with pytest.raises(ValueError, match="n_projections"):
        sliced_score_matching_loss(score, x, n_projections=0)
    with pytest.raises(ValueError, match="projection"):
        sliced_score_matching_loss(score, x, projection="gaussian")


@pytest.mark.parametrize("loss", [
    lambda bad: implicit_score_matching_loss(lambda y: bad(y), torch.randn(8, 2, dtype=F64)),
    lambda bad: sliced_score_matching_loss(lambda y: bad(y), torch.randn(8, 2, dtype=F64)),
    lambda bad: denoising_score_matching_loss(lambda y: bad(y), torch.randn(8, 2, dtype=F64), 0.5),
    lambda bad: ncsn_loss(lambda y, s: bad(y), torch.randn(8, 2, dtype=F64), torch.tensor([1.0, 0.5])),
    lambda bad: dsm_loss(lambda y, t: bad(y), VPSDE(), torch.randn(8, 2, dtype=F64)),
], ids=["implicit", "sliced", "denoising", "ncsn", "dsm"])
@pytest.mark.parametrize("bad", [lambda y: -y[:, :1], lambda y: -y.sum(1)], ids=["(B,1)", "(B,)"])
def test_score_of_the_wrong_shape_names_score_fn(loss, bad):
    # a (B, 1) score would broadcast against (B, 2) into a finite but meaningless loss
    with pytest.raises(ValueError, match="score_fn"):
        loss(bad)
