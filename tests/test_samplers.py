"""Reverse-SDE, predictor-corrector and probability-flow samplers against an exact mixture score.

Under every SDE the noised marginal of a Gaussian mixture is a mixture, so the exact score is
available at all t and the only errors left are Monte Carlo and discretization.
"""

import math

import pytest
import torch

from course_lib import samplers
from course_lib.distributions import GaussianMixture
from course_lib.parameterization import eps_from_score
from course_lib.sde import SDE, SubVPSDE, VESDE, VPSDE

SDES = [VPSDE(), SubVPSDE(), VESDE()]
# every fixed-grid sampler and its score evaluations per step (PC with one corrector move)
NFE_PER_STEP = {samplers.euler_maruyama: 1, samplers.reverse_diffusion_predictor: 1, samplers.predictor_corrector: 2,
                samplers.euler_ode: 1, samplers.heun_ode: 2, samplers.ddim: 1}
SAMPLERS = list(NFE_PER_STEP)


def mixture(dtype=torch.float64) -> GaussianMixture:
    """Two correlated components; smallest covariance eigenvalue ~0.15, so the PF-ODE velocity
    stays smooth down to t = eps and the solvers reach their asymptotic order."""
    return GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.5, 0.5], [1.0, -0.5]]),
                           torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.4]]])).to(dtype=dtype)


def grid(sde: SDE, n: int, dtype=torch.float64) -> torch.Tensor:
    return torch.linspace(sde.T, sde.eps, n + 1, dtype=dtype)


def moments(mix: GaussianMixture):
    """Exact mean (D,) and covariance (D, D) of a mixture."""
    mean = mix.weights @ mix.means
    second = torch.einsum("k,kde->de", mix.weights, mix.covs + torch.einsum("kd,ke->kde", mix.means, mix.means))
    return mean, second - torch.outer(mean, mean)


def assert_moments_match(x: torch.Tensor, mix: GaussianMixture, n_se: float = 4.0):
    """Sample mean and covariance within n_se standard errors; the SEs are estimated from the
    samples themselves (the mixture is not Gaussian, so no Gaussian formula for the
    covariance's SE). 4 SE makes a false failure ~1e-4 per entry."""
    n = x.shape[0]
    mean, cov = moments(mix)
    centred = x - x.mean(0)
    products = torch.einsum("nd,ne->nde", centred, centred)
    mean_se = x.std(0) / math.sqrt(n)
    cov_se = products.std(0) / math.sqrt(n)
    assert ((x.mean(0) - mean).abs() < n_se * mean_se).all(), (x.mean(0), mean)
    assert ((products.mean(0) - cov).abs() < n_se * cov_se).all(), (products.mean(0), cov)


# Step counts keep the discretization bias of each moment below 1 SE at n = 3000: measured with
# 40 000 samples, every moment is within 2.9 SE(40 000) of p_eps's, i.e. 0.8 SE at 3000 samples
# (Heun on VE needed 100 steps: at 60 its bias reached 1.2 SE at 3000 samples).
@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["VP", "VE"])
@pytest.mark.parametrize("sampler, n_steps", [(samplers.euler_maruyama, 300), (samplers.predictor_corrector, 150),
                                              (samplers.heun_ode, 100)], ids=["EM", "PC", "Heun"])
def test_sample_moments_match_mixture(sde, sampler, n_steps):
    mix = mixture()
    gen = torch.Generator().manual_seed(0)
    x_T = sde.prior_sampling((3000, 2), generator=gen, dtype=torch.float64)
    x = sampler(mix.score_fn(sde), sde, x_T, grid(sde, n_steps), generator=gen)
    # target p_eps, not p_0: the samplers stop at t = eps
    assert_moments_match(x, mix.marginal(sde, sde.eps))


def test_rk45_moments_and_nfe():
    sde, mix = SubVPSDE(), mixture()
    gen = torch.Generator().manual_seed(1)
    counter = samplers.NFECounter(mix.score_fn(sde))
    x, nfe = samplers.ode_rk45(counter, sde, sde.prior_sampling((3000, 2), generator=gen, dtype=torch.float64))
    assert nfe == counter.nfe > 0
    assert_moments_match(x, mix.marginal(sde, sde.eps))


def fitted_order(errors, nfes) -> float:
    """Least-squares slope of -log(error) against log(NFE)."""
    log_n, log_e = torch.tensor(nfes).log(), torch.tensor(errors).log()
    log_n = log_n - log_n.mean()
    return float(-(log_n * (log_e - log_e.mean())).sum() / (log_n**2).sum())


# Step ranges chosen near the asymptotic regime (VE needs finer grids: its velocity varies on
# the scale 1 / log(sigma_max / sigma_min) ~ 0.12 in t). Local slopes still wander by up to
# ~0.25 at the coarse end (Euler-VE: 0.90, 1.26, 1.04), so the fitted slope gets +-0.3, which
# still separates neighbouring orders (they differ by 1).
@pytest.mark.parametrize("sde, sampler, steps, order", [
    (VPSDE(), samplers.euler_ode, [32, 64, 128, 256], 1.0),
    (VESDE(), samplers.euler_ode, [64, 128, 256, 512], 1.0),
    (VPSDE(), samplers.heun_ode, [16, 32, 64, 128], 2.0),
    (SubVPSDE(), samplers.heun_ode, [16, 32, 64, 128], 2.0),
    (VESDE(), samplers.heun_ode, [32, 64, 128, 256], 2.0),
    (VPSDE(), samplers.ddim, [16, 32, 64, 128], 1.0),
    (VESDE(), samplers.ddim, [16, 32, 64, 128], 1.0),
], ids=["euler-VP", "euler-VE", "heun-VP", "heun-subVP", "heun-VE", "ddim-VP", "ddim-VE"])
def test_convergence_order(sde, sampler, steps, order):
    mix = mixture()
    score_fn = mix.score_fn(sde)
    x_T = sde.prior_sampling((16, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    reference = samplers.ode_reference(score_fn, sde, x_T)
    errors = [(sampler(score_fn, sde, x_T, grid(sde, n)) - reference).norm(dim=1).mean().item() for n in steps]
    # the reference is ~1e-10 accurate, far below the smallest error (> 1e-4)
    assert abs(fitted_order(errors, steps) - order) < 0.3, errors


def test_ode_rk45_matches_reference_within_tolerance():
    sde, mix = VESDE(), mixture()
    x_T = sde.prior_sampling((16, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    reference = samplers.ode_reference(mix.score_fn(sde), sde, x_T)
    x, _ = samplers.ode_rk45(mix.score_fn(sde), sde, x_T, rtol=1e-6, atol=1e-6)
    # RK45's local error control at 1e-6 accumulates to a global error of a few 1e-5 here
    assert (x - reference).abs().max() < 1e-4


@pytest.mark.parametrize("sde", SDES, ids=["VP", "subVP", "VE"])
def test_ddim_is_first_order_exponential_step(sde):
    """DDIM's data-prediction form equals the noise-prediction exponential-integrator step
    x_s = (alpha_s / alpha_t) x_t - sigma_s expm1(h) eps (Lu et al., 2022, eq. 3.7)."""
    mix = mixture()
    score_fn = mix.score_fn(sde)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2
    t, s = torch.full((32,), 0.6, dtype=torch.float64), torch.full((32,), 0.25, dtype=torch.float64)
    (a_t, sig_t), (a_s, sig_s) = sde.marginal(t), sde.marginal(s)
    h = (a_s / sig_s).log() - (a_t / sig_t).log()
    eps = eps_from_score(score_fn(x, t), sig_t)
    expected = (a_s / a_t)[:, None] * x - (sig_s * torch.expm1(h))[:, None] * eps
    level_t, level_s = samplers.levels(sde, torch.tensor([0.6, 0.25], dtype=torch.float64))
    x_s, x0_pred = samplers.ddim_step(score_fn, x, level_t, level_s)
    torch.testing.assert_close(x_s, expected, rtol=1e-10, atol=1e-10)  # float64 round-off
    torch.testing.assert_close(x0_pred, mix.denoiser(x, t, sde), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("sde", SDES, ids=["VP", "subVP", "VE"])
def test_forward_increments_are_the_exact_transition(sde):
    """alpha_t = (1 + f_i) alpha_s and sigma_t^2 = (1 + f_i)^2 sigma_s^2 + G_i^2."""
    for pair in ([0.7, 0.69], [0.02, 0.01]):
        t, s = samplers.levels(sde, torch.tensor(pair, dtype=torch.float64))
        f, g = samplers.forward_increments(t, s)
        assert t.alpha == pytest.approx((1 + f) * s.alpha, rel=1e-12, abs=0)
        assert t.sigma**2 == pytest.approx((1 + f) ** 2 * s.sigma**2 + g**2, rel=1e-12, abs=0)


# float32 is where a last step can overflow or cancel, so it runs every SDE at NFE 1, 2 and
# 1000; float64 (same code path, more range and precision) runs NFE 1 and 2 everywhere and 1000
# on VE, the widest range of sigma, to keep this file within its time budget.
@pytest.mark.parametrize("dtype, sde, nfes", [
    *[(torch.float32, sde, (1, 2, 1000)) for sde in SDES],
    (torch.float64, VPSDE(), (1, 2)), (torch.float64, SubVPSDE(), (1, 2)), (torch.float64, VESDE(), (1, 2, 1000)),
], ids=["f32-VP", "f32-subVP", "f32-VE", "f64-VP", "f64-subVP", "f64-VE"])
def test_no_nan_or_inf_at_any_nfe(dtype, sde, nfes):
    mix = mixture(dtype)
    gen = torch.Generator().manual_seed(5)
    for nfe in nfes:
        for sampler, nfe_per_step in NFE_PER_STEP.items():
            n_steps = max(1, nfe // nfe_per_step)  # Heun and PC need 2 evaluations at least
            x = sampler(mix.score_fn(sde), sde, sde.prior_sampling((4, 2), generator=gen, dtype=dtype),
                        grid(sde, n_steps, dtype), generator=gen)
            assert x.dtype == dtype and torch.isfinite(x).all(), (sampler.__name__, nfe)


def test_callback_and_nfe_counts():
    sde, mix = VPSDE(), mixture()
    x_T = sde.prior_sampling((4, 2), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for sampler, nfe_per_step in NFE_PER_STEP.items():
        seen = []
        out = sampler(mix.score_fn(sde), sde, x_T, grid(sde, 5), callback=seen.append)
        assert [d["i"] for d in seen] == list(range(5))
        assert [d["nfe"] for d in seen] == [nfe_per_step * (i + 1) for i in range(5)]
        assert torch.equal(seen[-1]["x"], out) and float(seen[-1]["t"]) == pytest.approx(sde.eps)
        assert ("x0_pred" in seen[-1]) == (sampler is samplers.ddim)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda f: f.__name__)
def test_bad_grids_raise(sampler):
    sde, mix = VPSDE(), mixture()
    x = torch.zeros(2, 2, dtype=torch.float64)
    bad = [torch.linspace(sde.eps, sde.T, 5, dtype=torch.float64),  # increasing
           torch.tensor([1.0, 0.5, 0.5, 0.1], dtype=torch.float64),  # not strictly decreasing
           torch.tensor([1.5, 0.5, 0.1], dtype=torch.float64),  # above T
           torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64),  # below eps
           torch.tensor([1.0], dtype=torch.float64),  # no step
           torch.ones(2, 3, dtype=torch.float64)]  # not 1-D
    for ts in bad:
        with pytest.raises(ValueError):
            sampler(mix.score_fn(sde), sde, x, ts)


def test_rk45_rejects_bad_times():
    sde, mix = VPSDE(), mixture()
    x = torch.zeros(2, 2, dtype=torch.float64)
    for kwargs in [dict(t_start=2.0), dict(t_end=0.0), dict(t_start=0.5, t_end=0.5), dict(rtol=0.0)]:
        with pytest.raises(ValueError):
            samplers.ode_rk45(mix.score_fn(sde), sde, x, **kwargs)


def test_corrector_rejects_bad_arguments():
    sde, mix = VPSDE(), mixture()
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError):
        samplers.langevin_corrector(mix.score_fn(sde), sde, x, 0.5, snr=0.0)
    with pytest.raises(ValueError):
        samplers.langevin_corrector(mix.score_fn(sde), sde, x, 0.5, snr=0.1, n_steps=0)
    with pytest.raises(ValueError):
        samplers.predictor_corrector(mix.score_fn(sde), sde, x, grid(sde, 3), n_corrector_steps=-1)


def test_corrector_step_follows_the_snr_rule():
    """One move of Song et al.'s corrector, by hand: eps = 2 alpha (snr ||z|| / ||s||)^2 with
    batch-mean norms, x' = x + eps s + sqrt(2 eps) z, for a float and a per-sample alpha."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    score_fn = lambda y, t: -y / (1.0 + t[:, None])  # any score with t dependence
    t, snr = 0.4, 0.16
    for alpha in (1.0, torch.linspace(0.5, 1.0, 64, dtype=torch.float64)):
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        s = score_fn(x, torch.full((64,), t, dtype=torch.float64))
        a = alpha if isinstance(alpha, float) else alpha[:, None]
        eps = 2 * a * (snr * z.norm(dim=1).mean() / s.norm(dim=1).mean()) ** 2
        expected_mean = x + eps * s
        got, got_mean = samplers.langevin_corrector(score_fn, VPSDE(), x, t, snr=snr, alpha=alpha,
                                                    generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(got_mean, expected_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got, expected_mean + torch.sqrt(2 * eps) * z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sampler", [samplers.euler_maruyama, samplers.reverse_diffusion_predictor,
                                     samplers.predictor_corrector])
@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["VP", "VE"])
def test_stochastic_samplers_return_the_noise_free_mean_at_the_last_step(sampler, sde):
    seen = []
    x = sde.prior_sampling((32, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sampler(mixture().score_fn(sde), sde, x, torch.linspace(sde.T, sde.eps, 6, dtype=torch.float64),
                  generator=torch.Generator().manual_seed(1), callback=seen.append)
    assert torch.equal(out, seen[-1]["x_mean"]) and torch.equal(out, seen[-1]["x"])
    assert not torch.equal(seen[-2]["x"], seen[-2]["x_mean"])  # earlier steps do add noise


@pytest.mark.parametrize("n_corrector_steps", [1, 2])
def test_predictor_corrector_corrects_first_as_score_sde_does(n_corrector_steps):
    """The order of score_sde's pc_sampler: at each t_i the corrector's moves, then the predictor
    from t_i, so the score is read at t_0 = T (n_corrector_steps + 1) times, ..., never at the last
    time; Algorithm 1's predictor-first order would read it at t_1, ..., t_N after the corrector."""
    sde, seen = VPSDE(), []
    ts = grid(sde, 4)

    def score_fn(x, t):
        seen.append(float(t[0]))
        return -x

    x = sde.prior_sampling((8, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    samplers.predictor_corrector(score_fn, sde, x, ts, n_corrector_steps=n_corrector_steps,
                                 generator=torch.Generator().manual_seed(1))
    assert seen == [t for t in ts[:-1].tolist() for _ in range(n_corrector_steps + 1)]
