"""The forward SDEs against the ODEs their moments obey, DDPM's and NCSN's discretizations,
and the prior; course_lib.sde."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from course_lib.sde import SubVPSDE, VESDE, VPSDE, probability_flow_drift, reverse_drift
from course_lib.utils import append_dims

F64 = torch.float64
SDES = [
    VPSDE(), SubVPSDE(), VESDE(), VPSDE(beta_min=0.5, beta_max=5.0, eps=1e-4), VESDE(sigma_min=0.1, sigma_max=10.0)
]
ids = repr


def drift_coeff(sde, t):
    """f(t) of the affine drift f(x, t) = f(t) x: (B,)."""
    return sde.drift(torch.ones(t.shape[0], 1, dtype=t.dtype), t)[:, 0]


@pytest.mark.parametrize("sde", SDES, ids=ids)
def test_moments_obey_their_odes(sde):
    """For dx = f(t) x dt + g(t) dw the kernel's alpha and sigma obey d log alpha / dt = f and
    d sigma^2 / dt = 2 f sigma^2 + g^2, the mean and variance ODEs of a linear SDE."""
    t = torch.linspace(0.01, 0.99, 50, dtype=F64)
    h = 1e-5
    (a_plus, s_plus), (a_minus, s_minus) = sde.marginal(t + h), sde.marginal(t - h)
    alpha, sigma = sde.marginal(t)
    dlog_alpha = (a_plus.log() - a_minus.log()) / (2 * h)
    dvar = (s_plus**2 - s_minus**2) / (2 * h)
    f, g = drift_coeff(sde, t), sde.diffusion(t)
    # Central differences err by h^2 / 6 |q'''|: log alpha is quadratic in t (VP) or 0 (VE), so
    # only round-off eps |log alpha| / h ~ 1e-10 remains; for sigma^2, |q''' / q'| is at most
    # beta_max^2 = 400 (VP) or (2 log(sigma_max / sigma_min))^2 < 300 (VE), a relative error
    # below 1e-7 with h = 1e-5, plus round-off eps sigma^2 / h relative to q' ~ 1e-9.
    torch.testing.assert_close(dlog_alpha, f, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(dvar, 2 * f * sigma**2 + g**2, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=ids)
def test_initial_condition(sde):
    alpha0, sigma0 = sde.marginal(torch.zeros(1, dtype=F64))
    assert float(alpha0) == 1.0
    # VP and sub-VP start from the data; VE starts from sigma_min (score_sde's convention)
    assert float(sigma0) == (sde.sigma_min if isinstance(sde, VESDE) else 0.0)


def test_vp_identities():
    vp, subvp = VPSDE(), SubVPSDE()
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    alpha, sigma = vp.marginal(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t), rtol=0, atol=1e-15)
    alpha_sub, sigma_sub = subvp.marginal(t)
    torch.testing.assert_close(alpha_sub, alpha, rtol=0, atol=0)
    torch.testing.assert_close(sigma_sub, 1 - alpha**2, rtol=1e-13, atol=1e-15)
    assert (sigma_sub <= sigma + 1e-15).all()


@pytest.mark.parametrize("sde", SDES, ids=ids)
def test_inverse_lambda_inverts_marginal_lambda(sde):
    t = torch.linspace(sde.eps, sde.T, 1001, dtype=F64)  # both ends included
    # closed-form inverses, evaluated with logaddexp / expm1; float64 round-off ~ 1e-14
    torch.testing.assert_close(sde.inverse_lambda(sde.marginal_lambda(t)), t, rtol=0, atol=1e-10)


@pytest.mark.parametrize("sde", SDES, ids=ids)
def test_prior_logp_matches_torch_normal(sde):
    for shape in [(5, 3), (4, 1, 4, 4)]:
        z = sde.prior_std() * torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=F64)
        scale = torch.tensor(sde.prior_std(), dtype=F64)  # float64, or torch takes log(scale) in float32
        expected = torch.distributions.Normal(0.0, scale).log_prob(z).flatten(1).sum(1)
        torch.testing.assert_close(sde.prior_logp(z), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=ids)
@pytest.mark.parametrize("dim", [1, 2])
def test_prior_logp_integrates_to_one(sde, dim):
    s = sde.prior_std()
    h = 0.05 * s
    axis = torch.arange(-12 * s + h / 2, 12 * s, h, dtype=F64)
    grid = append_dims(axis, 2) if dim == 1 else torch.cartesian_prod(axis, axis)
    mass = sde.prior_logp(grid).exp().sum() * h**dim
    # Poisson summation: the lattice sum misses the integral by ~2 exp(-2 pi^2 s^2 / h^2) ~ 0;
    # the box misses the tail beyond 12 std (< 1e-32); round-off of a 2e5-term sum ~ 1e-11
    assert abs(float(mass) - 1.0) < 1e-10


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=ids)
def test_prior_sampling_std(sde):
    z = sde.prior_sampling((20_000, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    # the sample variance of n normals has relative SE sqrt(2 / n) = 0.01; allow 5 SE
    assert abs(float(z.var()) / sde.prior_std() ** 2 - 1.0) < 5 * math.sqrt(2 / z.numel())


def test_discrete_betas_are_ddpm():
    """Bit for bit DDPM's table (Ho et al., 2020), as the docstring promises."""
    ddpm = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    assert torch.equal(VPSDE().discrete_betas(1000), ddpm)
    ddpm_alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))  # numpy, not the library
    np.testing.assert_allclose(VPSDE().alphas_cumprod(1000).numpy(), ddpm_alpha_bar, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 19, 20, 1000.0, True, np.float64(50)])
@pytest.mark.parametrize("method", ["discrete_betas", "alphas_cumprod"])
def test_ddpm_chain_refuses_a_beta_at_or_above_one(method, n):
    """With beta_max = 20, n <= 20 puts beta_max / n >= 1 in the chain (alpha-bar 0 at n = 20,
    negative entries below, -1.66e-3 at index 5 for n = 10), and n = 1 is a one-point linspace;
    non-integers are refused too. The error names n and the smallest valid n."""
    with pytest.raises(ValueError, match=r"n must be an integer >= 21"):
        getattr(VPSDE(), method)(n)


def test_ddpm_chain_threshold_follows_beta_max():
    sde = VPSDE(beta_min=0.1, beta_max=5.0)
    with pytest.raises(ValueError, match=r">= 6"):
        sde.discrete_betas(5)  # last beta = 5 / 5 = 1
    assert float(sde.discrete_betas(6).max()) == 5.0 / 6
    assert VPSDE(beta_min=0.1, beta_max=0.5).discrete_betas(2).tolist() == [0.05, 0.25]


@pytest.mark.parametrize("n", list(range(21, 64)) + [100, 1000, np.int64(250)])
def test_every_allowed_ddpm_chain_is_a_valid_markov_chain(n):
    """Every allowed n gives betas in (0, 1), so alpha-bar lies in (0, 1) and decreases."""
    betas, alpha_bar = VPSDE().discrete_betas(n), VPSDE().alphas_cumprod(n)
    assert betas.shape == alpha_bar.shape == (int(n),)
    assert bool(((betas > 0) & (betas < 1)).all())
    assert bool(((alpha_bar > 0) & (alpha_bar < 1)).all()) and bool((alpha_bar[1:] < alpha_bar[:-1]).all())
    assert bool(torch.isfinite((1 - betas).sqrt()).all())


def test_the_continuous_chain_is_valid_at_any_n_and_is_not_ddpm():
    """The docstring's alternative, beta_i = 1 - alpha(i/n)^2 / alpha((i-1)/n)^2 (computed here in
    numpy from the closed form log alpha(t) = -beta_min t / 2 - (beta_max - beta_min) t^2 / 4),
    lies in (0, 1) for every n, is the forward transition `samplers.forward_increments` builds
    (G_i^2 = beta_i, (1 + f_i)^2 = 1 - beta_i) and differs from DDPM's table by 2.1e-4 at most."""
    from course_lib import samplers

    def log_alpha(t):
        return -0.05 * t - 0.25 * 19.9 * t**2

    for n in [1, 10, 1000]:
        t = np.arange(n + 1) / n
        beta = -np.expm1(2 * (log_alpha(t[1:]) - log_alpha(t[:-1])))
        assert ((beta > 0) & (beta < 1)).all()
        np.testing.assert_allclose(np.cumprod(1 - beta)[-1], np.exp(2 * log_alpha(1.0)), rtol=1e-12)
        grid = samplers.levels(VPSDE(), torch.tensor(t[::-1].copy()).clamp_min(1e-3))
        for (i, (high, low)) in enumerate(zip(grid, grid[1:])):
            f_i, g_i = samplers.forward_increments(high, low)
            if i < n - 1:  # away from the clamp at t = eps
                assert math.isclose(g_i**2, beta[n - 1 - i], rel_tol=1e-10)
                assert math.isclose((1 + f_i) ** 2, 1 - beta[n - 1 - i], rel_tol=1e-12)
    difference = np.abs(beta - np.linspace(1e-4, 0.02, 1000))
    assert 2.0e-4 < difference.max() < 2.2e-4  # 2.08e-4, at the last step
    assert 0.099 < difference[0] / 1e-4 < 0.1  # 9.9 % of the first beta


def test_ve_starts_from_the_data_convolved_with_sigma_min():
    """VE's kernel std is sigma(t) itself, so p_0 = p_data * N(0, sigma_min^2 I): the SDE adds
    int_0^t g^2 = sigma(t)^2 - sigma_min^2 (quadrature, not the library), and a mixture's
    marginal at t = 0 carries sigma_min^2 I in every covariance (numbers of the docstring)."""
    from course_lib.distributions import GaussianMixture

    ve = VESDE()
    for t in [1e-3, 0.3, 1.0]:
        added, _ = quad(lambda s: float(ve.diffusion(torch.tensor(s, dtype=F64))) ** 2, 0.0, t,
                        epsabs=0, epsrel=1e-12)
        sigma_t = 0.01 * 5000.0**t
        assert math.isclose(added, sigma_t**2 - 0.01**2, rel_tol=1e-9)
    sigma = float(ve.marginal_std(torch.tensor(1e-3, dtype=F64)))
    assert round(sigma, 5) == 0.01009 and round(math.sqrt(sigma**2 - 0.01**2), 5) == 0.00131
    data = GaussianMixture(*(torch.tensor(v, dtype=F64) for v in ([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 2.0]]])))
    torch.testing.assert_close(data.marginal(ve, 0.0).covs, data.covs + 0.01**2 * torch.eye(2, dtype=F64),
                               rtol=1e-12, atol=0)


def test_alphas_cumprod_converges_at_first_order():
    """alpha-bar_i = prod_{j<=i} (1 - beta_j) -> alpha((i + 1) / n)^2 with an O(1/n) error:
    log(1 - beta_j) = -beta_j + O(n^-2) summed over n terms, and the left-endpoint sum of
    beta over the grid j / (n - 1) is an O(1/n) quadrature of int beta."""
    sde = VPSDE()
    errors = []
    for n in [250, 500, 1000, 2000]:
        i = torch.arange(n, dtype=F64)
        errors.append(float((sde.alphas_cumprod(n) - sde.marginal((i + 1) / n)[0] ** 2).abs().max()))
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    # error = c / n + O(1/n^2): halving ratios within 1.9 to 2.1 once n >= 250
    assert all(1.9 < r < 2.1 for r in ratios), ratios
    assert errors[-1] < 1e-3


def test_ve_discrete_sigmas_are_geometric():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    sigmas = sde.discrete_sigmas(10)
    torch.testing.assert_close(sigmas[[0, -1]], torch.tensor([50.0, 0.01], dtype=F64), rtol=1e-14, atol=0)
    ratio = (0.01 / 50.0) ** (1 / 9)
    torch.testing.assert_close(sigmas[1:] / sigmas[:-1], torch.full((9,), ratio, dtype=F64), rtol=1e-13, atol=0)
    with pytest.raises(ValueError, match="n must"):
        sde.discrete_sigmas(1)


def test_subvp_has_no_discrete_chain():
    with pytest.raises(NotImplementedError):
        SubVPSDE().discrete_betas(10)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: VPSDE(beta_min=-0.1), "beta_min"),
        (lambda: VPSDE(beta_max=0.0), "beta_max"),
        (lambda: VPSDE(beta_min=5.0, beta_max=1.0), "beta_max"),
        (lambda: SubVPSDE(beta_max=float("nan")), "beta_max"),
        (lambda: VPSDE(eps=0.0), "eps"),
        (lambda: VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: VESDE(sigma_max=float("inf")), "sigma_max"),
        (lambda: VESDE(sigma_min=10.0, sigma_max=1.0), "sigma_max"),
        (lambda: VESDE(eps=-1e-5), "eps"),
        (lambda: VPSDE().discrete_betas(0), "n must"),
    ],
)
def test_bad_arguments_raise(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("make", [lambda: VPSDE(eps=1.0), lambda: SubVPSDE(eps=2.0), lambda: VESDE(eps=1.5)])
def test_eps_at_or_beyond_T_raises(make):
    """eps >= T leaves no time interval [eps, T] to sample or train on."""
    with pytest.raises(ValueError, match="eps"):
        make()


@pytest.mark.parametrize("sde", SDES, ids=ids)
def test_check_time(sde):
    sde.check_time(sde.eps)
    sde.check_time(torch.tensor([sde.eps, 0.5, sde.T]))
    for bad in [0.0, 1.5, torch.tensor([0.5, 1.2]), torch.tensor([0.5, float("nan")])]:
        with pytest.raises(ValueError, match="must lie in|NaN"):
            sde.check_time(bad)


def test_check_time_slack_is_relative_to_each_end():
    """The slack absorbs float32 round-off of the grid ends, and no more: at VE's eps = 1e-5 it is
    1e-6 * eps = 1e-11, so t = 0.9e-5 (10 % below eps) is refused."""
    ve = VESDE()
    for ok in [torch.tensor(1e-5, dtype=torch.float32),    # float32(1e-5) = 1e-5 (1 - 2.5e-8)
               torch.tensor([1e-5, 1.0], dtype=torch.float32), 1.0 + 5e-7]:
        ve.check_time(ok)
    for bad in [0.9e-5, 1e-5 * (1 - 1e-5), 1.0 + 2e-6]:
        with pytest.raises(ValueError, match="must lie in"):
            ve.check_time(bad)


@pytest.mark.parametrize("sde", SDES[:3], ids=ids)
@pytest.mark.parametrize("drift", [reverse_drift, probability_flow_drift])
def test_drifts_broadcast_a_float_time(sde, drift):
    """A float t is broadcast to (B,), as a tensor t would be; the score sees t: (B,)."""
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    seen = []

    def score_fn(x, t):
        seen.append(t.shape)
        return -x
    expected = drift(sde, score_fn, x, torch.full((4,), 0.5))
    torch.testing.assert_close(drift(sde, score_fn, x, 0.5), expected, rtol=0, atol=0)
    assert seen == [(4,), (4,)]


@pytest.mark.parametrize("sde", SDES[:3], ids=ids)
def test_drifts_transport_a_gaussian(sde):
    """For data N(0, s0^2 I), p_t = N(0, v(t) I) with v = alpha^2 s0^2 + sigma^2, and the
    probability-flow map is x_t = sqrt(v(t) / v(0)) x_0, whose velocity is (v' / 2v) x."""
    s0 = 0.7
    t = torch.linspace(0.05, 0.95, 7, dtype=F64)
    x = torch.randn(7, 1, 3, 3, generator=torch.Generator().manual_seed(2), dtype=F64)

    def v(t):
        alpha, sigma = sde.marginal(t)
        return alpha**2 * s0**2 + sigma**2

    def score_fn(x, t):
        return -x / append_dims(v(t), x.ndim)

    h = 1e-5
    velocity = append_dims((v(t + h) - v(t - h)) / (2 * h) / (2 * v(t)), x.ndim) * x
    # central difference: relative error ~ h^2 |v''' / v'| < 1e-7 (see test_moments_obey_their_odes)
    torch.testing.assert_close(probability_flow_drift(sde, score_fn, x, t), velocity, rtol=1e-6, atol=1e-9)
    # the reverse SDE's drift f - g^2 score plus f is twice the PF-ODE's f - g^2 score / 2
    pf = probability_flow_drift(sde, score_fn, x, t)
    both = reverse_drift(sde, score_fn, x, t) + sde.drift(x, t)
    torch.testing.assert_close(both, 2 * pf, rtol=1e-12, atol=1e-12)
