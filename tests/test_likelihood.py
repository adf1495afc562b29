"""PF-ODE likelihood against the exact log-density of a Gaussian mixture's noised marginal."""

import math

import pytest
import torch

from course_lib import likelihood, utils
from course_lib.distributions import GaussianMixture
from course_lib.sde import SubVPSDE, VESDE, VPSDE

SDES = [VPSDE(), SubVPSDE(), VESDE()]


def mixture() -> GaussianMixture:
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.4]]])
    return GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.5, 0.5], [1.0, -0.5]]), covs).to(dtype=torch.float64)


def data(n: int = 6) -> torch.Tensor:
    return mixture().sample(n, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sde", SDES, ids=["VP", "subVP", "VE"])
def test_exact_trace_matches_marginal_log_prob(sde):
    """The PF-ODE maps p_eps onto p_T exactly, so with the exact p_T as the terminal density the
    only error is the solver's: with rtol = atol = 1e-8 the log-density error is ~1e-8 per unit
    of integrated divergence (measured ~2e-7 at 1e-7), so 1e-5 leaves a wide margin."""
    mix, x = mixture(), data()
    p_T = mix.marginal(sde, sde.T)
    logp, z, nfe = likelihood.pf_ode_log_likelihood(mix.score_fn(sde), sde, x, prior_logp=p_T.log_prob,
                                                    rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(logp, mix.marginal_log_prob(x, sde.eps, sde), rtol=0, atol=1e-5)
    assert nfe > 0 and z.shape == x.shape


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["VP", "VE"])
def test_default_prior_differs_only_by_the_prior_mismatch(sde):
    """With sde.prior_logp the result shifts by exactly log N(z; 0, prior_std^2) - log p_T(z),
    which is small here (p_T is within alpha_T ~ 7e-3 (VP) or |mean| / sigma_max (VE) of the prior)."""
    mix, x = mixture(), data()
    p_T = mix.marginal(sde, sde.T)
    exact_T, z, _ = likelihood.pf_ode_log_likelihood(mix.score_fn(sde), sde, x, prior_logp=p_T.log_prob,
                                                     rtol=1e-8, atol=1e-8)
    default, _, _ = likelihood.pf_ode_log_likelihood(mix.score_fn(sde), sde, x, rtol=1e-8, atol=1e-8)
    mismatch = sde.prior_logp(z) - p_T.log_prob(z)
    torch.testing.assert_close(default - exact_T, mismatch, rtol=0, atol=1e-6)
    assert mismatch.abs().max() < 0.05


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["VP", "VE"])
@pytest.mark.parametrize("probe, copies, k", [(utils.rademacher_like, 64, 1), (utils.gaussian_like, 128, 2)],
                         ids=["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_within_its_monte_carlo_error(sde, probe, copies, k):
    """Each point is repeated `copies` times in the batch, so every copy gets its own probes over
    one solve; the copies' mean must agree with the exact log-density within 4 of its standard
    errors (the estimates are iid given the shared trajectory; with 64 to 128 copies the mean
    is near-Gaussian, Gaussian probes' skew included) plus the solver error (< 1e-4 at 1e-6)."""
    mix, x = mixture(), data()
    gen = torch.Generator().manual_seed(1)
    p_T = mix.marginal(sde, sde.T)
    logp, _, _ = likelihood.pf_ode_log_likelihood(mix.score_fn(sde), sde, x.repeat(copies, 1), probe=probe,
                                                  hutchinson_samples=k, prior_logp=p_T.log_prob,
                                                  rtol=1e-6, atol=1e-6, generator=gen)
    logp = logp.view(copies, len(x))
    se = logp.std(0) / math.sqrt(copies)
    assert (se > 0).all()  # the estimator does carry noise: the test is not vacuous
    exact = mix.marginal_log_prob(x, sde.eps, sde)
    assert ((logp.mean(0) - exact).abs() < 4 * se + 1e-4).all(), ((logp.mean(0) - exact) / se)


@pytest.mark.parametrize("sde", SDES, ids=["VP", "subVP", "VE"])
def test_encode_decode_round_trip(sde):
    mix, x = mixture(), data()
    z, nfe_enc = likelihood.encode(mix.score_fn(sde), sde, x, rtol=1e-8, atol=1e-8)
    x_back, nfe_dec = likelihood.decode(mix.score_fn(sde), sde, z, rtol=1e-8, atol=1e-8)
    # two solves at tolerance 1e-8 (measured round trip ~1e-7 at 1e-7)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-5)
    assert nfe_enc > 0 and nfe_dec > 0


def test_bits_per_dim_of_the_uniform_density_is_log2_of_the_bins():
    """Uniform on [-1, 1]^D has log p = -D log 2; every one of the n_bins^D cells then has
    probability n_bins^-D, i.e. exactly log2(n_bins) bits per dimension."""
    dim = 12
    logp = torch.full((3,), -dim * math.log(2.0), dtype=torch.float64)
    torch.testing.assert_close(likelihood.bits_per_dim(logp, dim), torch.full((3,), 8.0, dtype=torch.float64))
    four_bits = torch.full((3,), 4.0, dtype=torch.float64)
    torch.testing.assert_close(likelihood.bits_per_dim(logp, dim, n_bins=16), four_bits)
    with pytest.raises(ValueError):
        likelihood.bits_per_dim(logp, 0)


def test_dequantize_stays_in_its_bin():
    k = torch.arange(256).repeat(4)
    y = likelihood.dequantize(k, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert (y >= -1).all() and (y < 1).all()
    assert torch.equal(torch.floor((y + 1) * 128).long(), k)
    with pytest.raises(ValueError):
        likelihood.dequantize(torch.tensor([256]))


def test_bad_arguments_raise():
    sde, mix, x = VPSDE(), mixture(), data()
    for kwargs in [dict(t_start=0.5, t_end=0.2), dict(t_end=1.5), dict(hutchinson_samples=0), dict(rtol=-1.0)]:
        with pytest.raises(ValueError):
            likelihood.pf_ode_log_likelihood(mix.score_fn(sde), sde, x, **kwargs)


def test_slerp_keeps_the_norm_and_ends_at_its_endpoints():
    gen = torch.Generator().manual_seed(3)
    z0, z1 = torch.randn(2, 4, 4, 4, generator=gen, dtype=torch.float64).unbind(0)  # (B=4, 4, 4)
    z1 = z1 * (z0.flatten(1).norm(dim=1) / z1.flatten(1).norm(dim=1)).view(4, 1, 1)  # equal norms
    u = torch.linspace(0, 1, 7, dtype=torch.float64)
    path = likelihood.slerp(z0, z1, u)
    assert path.shape == (7, 4, 4, 4)
    torch.testing.assert_close(path[0], z0, rtol=0, atol=1e-12)
    torch.testing.assert_close(path[-1], z1, rtol=0, atol=1e-12)
    norms = path.flatten(2).norm(dim=2)  # (K, B): constant along the arc
    torch.testing.assert_close(norms, norms[:1].expand(7, 4), rtol=1e-12, atol=0)
    # the angle to z0 grows linearly in u
    cos = (path.flatten(2) * z0.flatten(1)).sum(2) / (norms * z0.flatten(1).norm(dim=1))
    angle = torch.arccos(cos.clamp(-1, 1))
    # arccos near 1 keeps only half the digits: sqrt(float64 round-off) ~ 1.5e-8
    torch.testing.assert_close(angle, u[:, None] * angle[-1:], rtol=0, atol=1e-7)
    # the straight line's midpoint cuts inside the sphere
    assert bool(((0.5 * (z0 + z1)).flatten(1).norm(dim=1) < norms[0]).all())


def test_slerp_of_parallel_latents_is_the_straight_line_and_antipodal_ones_raise():
    z0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    u = torch.tensor([0.25], dtype=torch.float64)
    torch.testing.assert_close(likelihood.slerp(z0, 3 * z0, u)[0], 1.5 * z0, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="antipodal"):
        likelihood.slerp(z0, -z0, u)
    with pytest.raises(ValueError, match="u must"):
        likelihood.slerp(z0, 3 * z0, torch.tensor([1.5]))
    with pytest.raises(ValueError, match="shape"):
        likelihood.slerp(z0, z0[0], u)
