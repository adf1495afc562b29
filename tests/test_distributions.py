"""Gaussian mixtures and their noised marginals against closed forms, autograd and Monte Carlo."""

import math

import pytest
import torch

from course_lib.distributions import GaussianMixture, checkerboard, ring_of_gaussians, swiss_roll, two_moons
from course_lib.sde import SubVPSDE, VESDE, VPSDE
from course_lib.utils import append_dims

F64 = torch.float64
SDES = [VPSDE(), SubVPSDE(), VESDE()]


def random_mixture(k: int, d: int, seed: int, dtype=F64) -> GaussianMixture:
    """K components with random means, full covariances (eigenvalues in [0.1, 1.1]) and weights."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(k, d, d, generator=g, dtype=F64))
    evals = 0.1 + torch.rand(k, d, generator=g, dtype=F64)
    covs = q @ torch.diag_embed(evals) @ q.transpose(1, 2)
    weights = torch.rand(k, generator=g, dtype=F64) + 0.2
    means = 2.0 * torch.randn(k, d, generator=g, dtype=F64)
    return GaussianMixture(weights / weights.sum(), means, covs).to(dtype=dtype)


def mixture_moments(gm: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean sum_k w_k mu_k and covariance sum_k w_k (S_k + mu_k mu_k^T) - m m^T."""
    w = gm.weights
    mean = w @ gm.means
    second = torch.einsum("k,kde->de", w, gm.covs + torch.einsum("kd,ke->kde", gm.means, gm.means))
    return mean, second - torch.outer(mean, mean)


def assert_moments_match(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, n_se: float = 5.0):
    """Sample mean and covariance of x: (n, D) within n_se Monte Carlo standard errors.

    The SE of a mean is std / sqrt(n); the SE of a covariance entry is the std of the products
    (x_i - m_i)(x_j - m_j) over sqrt(n), estimated from the same samples. At 5 SE a correct
    implementation fails one comparison with probability about 6e-7.
    """
    n = x.shape[0]
    centred = x - mean
    mean_se = centred.std(0) / math.sqrt(n)
    assert ((x.mean(0) - mean).abs() <= n_se * mean_se).all()
    products = torch.einsum("nd,ne->nde", centred, centred)
    cov_se = products.std(0) / math.sqrt(n)
    assert ((products.mean(0) - cov).abs() <= n_se * cov_se).all()


# -- p_0 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 5])
def test_score_is_gradient_of_log_prob(d):
    gm = random_mixture(4, d, seed=d)
    x = 3.0 * torch.randn(64, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    # the same closed form, differentiated by hand and by autograd: equal up to float64
    # round-off (1e-16) times the conditioning of S_k^{-1} (eigenvalues >= 0.1), far below 1e-10
    torch.testing.assert_close(gm.score(x.detach()), grad, rtol=1e-10, atol=1e-10)


def test_single_gaussian_log_prob_matches_torch():
    gm = random_mixture(1, 3, seed=0)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    reference = torch.distributions.MultivariateNormal(gm.means[0], gm.covs[0]).log_prob(x)
    # Cholesky versus eigendecomposition: the same number up to float64 round-off
    torch.testing.assert_close(gm.log_prob(x), reference, rtol=1e-12, atol=1e-12)


def test_log_prob_integrates_to_one():
    gm = random_mixture(3, 2, seed=3)
    h, half_width = 0.1, 12.0
    axis = torch.arange(-half_width + h / 2, half_width, h, dtype=F64)
    grid = torch.cartesian_prod(axis, axis)
    mass = gm.log_prob(grid).exp().sum() * h**2
    # By Poisson summation, a lattice sum of a Gaussian with covariance S misses its integral by
    # about exp(-(2 pi / h)^2 lambda_min(S) / 2) < exp(-190) (lambda_min >= 0.1, h = 0.1). The
    # box cuts off a tail: means lie within 7 of the origin (2 * N(0, 1) for this seed) and
    # stds are below 1.05, so at least 4.7 stds remain, a mass below 1e-5 per component.
    assert gm.means.abs().max() < 7.0
    assert abs(float(mass) - 1.0) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_finite_far_from_every_component(dtype):
    gm = random_mixture(3, 4, seed=4, dtype=dtype)
    x = torch.tensor([[1e4] * 4, [-1e4, 1e4, 0.0, 3.0], [0.0, 0.0, 0.0, -1e4]], dtype=dtype)
    for value in (gm.log_prob(x), gm.score(x), gm.marginal_score(x, 0.5, VPSDE()), gm.denoiser(x, 0.5, VESDE())):
        assert torch.isfinite(value).all()
    # exp(log_prob) underflows here, so any score formed as grad p / p would be 0/0
    assert (gm.log_prob(x).exp() == 0).all()


def test_far_score_is_dominant_component_score():
    gm = random_mixture(3, 2, seed=5)
    x = torch.tensor([[1e4, -3e3]], dtype=F64)
    components = [torch.distributions.MultivariateNormal(m, c) for m, c in zip(gm.means, gm.covs)]
    log_terms = torch.stack([c.log_prob(x)[0] for c in components])
    k = int((gm.weights.log() + log_terms).argmax())
    # the runner-up is at least thousands of nats behind, so the responsibility is one to
    # round-off and the score is -S_k^{-1} (x - mu_k), up to float64 round-off
    expected = -torch.linalg.solve(gm.covs[k], (x - gm.means[k]).T).T
    torch.testing.assert_close(gm.score(x), expected, rtol=1e-10, atol=0.0)


def test_sample_moments():
    gm = random_mixture(3, 2, seed=6)
    x = gm.sample(20_000, generator=torch.Generator().manual_seed(7))
    assert x.shape == (20_000, 2) and x.dtype == F64
    assert_moments_match(x, *mixture_moments(gm))


def test_sample_is_reproducible_with_generator():
    gm = random_mixture(2, 3, seed=8)
    a, b = (gm.sample(5, generator=torch.Generator().manual_seed(9)) for _ in range(2))
    assert torch.equal(a, b)


# -- p_t ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("t", [0.05, 0.3, 1.0])
def test_noised_mixture_matches_monte_carlo(sde, t):
    gm = random_mixture(3, 2, seed=10)
    g = torch.Generator().manual_seed(11)
    x0 = gm.sample(20_000, generator=g)
    xt = sde.perturb(x0, t, torch.randn(x0.shape, generator=g, dtype=F64))
    assert_moments_match(xt, *mixture_moments(gm.marginal(sde, t)))


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_per_sample_time_matches_per_time_mixture(sde):
    gm = random_mixture(3, 3, seed=12)
    g = torch.Generator().manual_seed(13)
    t = sde.eps + (sde.T - sde.eps) * torch.rand(16, generator=g, dtype=F64)
    alpha, sigma = sde.marginal(t)
    x0, noise = (torch.randn(16, 3, generator=g, dtype=F64) for _ in range(2))
    x = append_dims(alpha, 2) * 2.0 * x0 + append_dims(sigma, 2) * noise
    one_by_one = [gm.marginal(sde, float(ti)) for ti in t]
    score = gm.marginal_score(x, t, sde)
    log_prob = gm.marginal_log_prob(x, t, sde)
    expected_score = torch.cat([m.score(xi[None]) for m, xi in zip(one_by_one, x)])
    expected_log_prob = torch.cat([m.log_prob(xi[None]) for m, xi in zip(one_by_one, x)])
    # two routes to the same closed form (re-factorizing alpha^2 S + sigma^2 I per t versus
    # rescaling one eigendecomposition): float64 round-off times the conditioning of S_k
    torch.testing.assert_close(score, expected_score, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(log_prob, expected_log_prob, rtol=1e-10, atol=1e-10)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.marginal_log_prob(x, t, sde).sum(), x)
    torch.testing.assert_close(score, grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gm.score_fn(sde)(x.detach(), t), score, rtol=0, atol=0)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_denoiser_is_tweedie(sde):
    gm = random_mixture(3, 2, seed=14)
    g = torch.Generator().manual_seed(15)
    t = torch.tensor([0.02, 0.2, 0.5, 0.9], dtype=F64)
    x = 3.0 * torch.randn(4, 2, generator=g, dtype=F64)
    alpha, sigma = sde.marginal(t)
    tweedie = (x + append_dims(sigma, 2) ** 2 * gm.marginal_score(x, t, sde)) / append_dims(alpha, 2)
    # per-component posterior means versus Tweedie's formula; the latter loses digits as
    # sigma^2 |score| ~ |x| cancels, by a factor up to sigma^2 / (alpha^2 l_min) (2e3 here)
    torch.testing.assert_close(gm.denoiser(x, t, sde), tweedie, rtol=1e-9, atol=1e-9)


def test_denoiser_of_single_gaussian():
    gm = random_mixture(1, 3, seed=16)
    sde, t = VPSDE(), 0.4
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(17), dtype=F64)
    alpha, sigma = (float(c) for c in sde.marginal(torch.tensor(t, dtype=F64)))
    mu, cov = gm.means[0], gm.covs[0]
    noised = alpha**2 * cov + sigma**2 * torch.eye(3, dtype=F64)
    # the Gaussian posterior mean mu + alpha S (alpha^2 S + sigma^2 I)^{-1} (x - alpha mu)
    expected = mu + (alpha * cov @ torch.linalg.solve(noised, (x - alpha * mu).T)).T
    torch.testing.assert_close(gm.denoiser(x, t, sde), expected, rtol=1e-12, atol=1e-12)


def test_perturbed_parameters():
    gm = random_mixture(2, 2, seed=18)
    p = gm.perturbed(0.5, 2.0)
    torch.testing.assert_close(p.means, 0.5 * gm.means)
    torch.testing.assert_close(p.covs, 0.25 * gm.covs + 4.0 * torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match="std"):
        gm.perturbed(1.0, -1.0)
    with pytest.raises(ValueError, match="t must lie"):
        gm.marginal(VPSDE(), 1.5)


# -- construction -------------------------------------------------------------------------------
def test_lists_and_to():
    gm = GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [[[1.0]], [[2.0]]])
    assert gm.dim == 1 and gm.n_components == 2 and gm.means.dtype == torch.get_default_dtype()
    g64 = gm.to(dtype=F64)
    assert g64 is not gm and g64.covs.dtype == F64 and gm.covs.dtype == torch.get_default_dtype()
    x = torch.zeros(1, 1, dtype=F64)
    assert g64.log_prob(x).dtype == F64


@pytest.mark.parametrize(
    "weights, means, covs, name",
    [
        ([[1.0]], [[0.0]], [[[1.0]]], "weights"),
        ([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "weights"),
        ([1.5, -0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "weights"),
        ([1.0], [[0.0], [1.0]], [[[1.0]]], "means"),
        ([1.0], [0.0], [[[1.0]]], "means"),
        ([1.0], [[0.0, 0.0]], [[[1.0]]], "covs"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]], "covs"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], "covs"),
    ],
)
def test_bad_parameters_raise(weights, means, covs, name):
    with pytest.raises(ValueError, match=name):
        GaussianMixture(weights, means, covs)


def test_bad_x_raises():
    gm = random_mixture(2, 3, seed=19)
    with pytest.raises(ValueError, match="x must"):
        gm.score(torch.zeros(4, 2, dtype=F64))


# -- toys ---------------------------------------------------------------------------------------
def test_toys_shapes_and_reproducibility():
    for sampler in (two_moons, swiss_roll, checkerboard):
        a = sampler(100, generator=torch.Generator().manual_seed(0))
        b = sampler(100, generator=torch.Generator().manual_seed(0))
        assert a.shape == (100, 2) and torch.equal(a, b)


def test_toys_geometry():
    g = torch.Generator().manual_seed(1)
    moons = two_moons(1000, generator=g, noise=0.0) + torch.tensor([0.5, 0.25])
    # noiseless moons lie on the unit circles centred at (0, 0) and (1, 0.5); float32 round-off
    on_upper = (moons.norm(dim=1) - 1).abs() < 1e-5
    on_lower = ((moons - torch.tensor([1.0, 0.5])).norm(dim=1) - 1).abs() < 1e-5
    assert (on_upper | on_lower).all() and 300 < on_upper.sum() < 700
    roll = swiss_roll(1000, generator=g, noise=0.0)
    radius = 5 * roll.norm(dim=1)  # equals theta in [1.5 pi, 4.5 pi], and the angle is theta mod 2 pi
    assert (radius > 1.5 * math.pi - 1e-4).all() and (radius < 4.5 * math.pi + 1e-4).all()
    angle_gap = torch.remainder(torch.atan2(roll[:, 1], roll[:, 0]) - radius + math.pi, 2 * math.pi) - math.pi
    assert (angle_gap.abs() < 1e-4).all()
    board = checkerboard(1000, generator=g)
    assert (board.abs() <= 2).all()
    assert ((torch.floor(board[:, 0]) + torch.floor(board[:, 1])) % 2 == 0).all()


def test_ring_of_gaussians():
    gm = ring_of_gaussians(n_modes=6, radius=3.0, std=0.2)
    torch.testing.assert_close(gm.means.norm(dim=1), torch.full((6,), 3.0))
    torch.testing.assert_close(gm.weights, torch.full((6,), 1 / 6))
    torch.testing.assert_close(gm.covs, 0.04 * torch.eye(2).expand(6, 2, 2))
    x = gm.sample(500, generator=torch.Generator().manual_seed(2))
    # every draw within 6 std of a mode (a 2-D Gaussian exceeds that with probability e^-18)
    assert (torch.cdist(x, gm.means).min(dim=1).values < 6 * 0.2).all()
    with pytest.raises(ValueError, match="n_modes"):
        ring_of_gaussians(n_modes=0)


def test_toys_bad_arguments_raise():
    with pytest.raises(ValueError, match="n must"):
        checkerboard(0)
    with pytest.raises(ValueError, match="noise"):
        two_moons(10, noise=-0.1)
    with pytest.raises(ValueError, match="n must"):
        ring_of_gaussians().sample(2.5)
