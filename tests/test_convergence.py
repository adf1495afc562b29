"""Error-against-NFE studies: the order fit on exact power laws, the NFE each runner reports,
and measured orders of known solvers on a Gaussian mixture with its exact score."""

import math

import pytest
import torch

from course_lib import convergence as cv
from course_lib import dpm_solver as dpm
from course_lib import samplers as smp
from course_lib.distributions import GaussianMixture
from course_lib.sde import VPSDE

F64 = torch.float64


def mixture() -> GaussianMixture:
    """Overlapping anisotropic components: the asymptotic range starts near NFE 48."""
    covs = torch.tensor([[[0.20, 0.05], [0.05, 0.10]], [[0.12, -0.04], [-0.04, 0.15]], [[0.10, 0.0], [0.0, 0.25]]])
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]]),
                           covs).to(dtype=F64)


def problem(n=16):
    sde = VPSDE()
    score_fn = mixture().score_fn(sde)
    x = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    return sde, score_fn, x, smp.ode_reference(score_fn, sde, x)


def test_fitted_order_recovers_an_exact_power_law():
    nfes = [10, 20, 40, 80]
    for p in (1.0, 2.0, 3.5):
        errors = [3.0 * n**-p for n in nfes]
        assert cv.fitted_order(nfes, errors) == pytest.approx(p, rel=1e-12)
        assert cv.local_orders(nfes, errors) == pytest.approx([p] * 3, rel=1e-12)
    # unevenly spaced NFEs: the slope is still the exponent
    assert cv.fitted_order([7, 19, 100], [n**-2.0 for n in (7, 19, 100)]) == pytest.approx(2.0, rel=1e-12)


def test_endpoint_error_is_the_rms_of_distances():
    x = torch.zeros(2, 2, dtype=F64)
    ref = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=F64)  # distances 5 and 0
    assert cv.endpoint_error(x, ref) == pytest.approx(math.sqrt(12.5), rel=1e-15)
    with pytest.raises(ValueError, match="shape"):
        cv.endpoint_error(x, ref[:1])


def test_runners_report_the_nfe_they_spend():
    sde, score_fn, x, _ = problem(4)
    for run, nfe, spent in ((cv.on_grid(smp.heun_ode, dpm.time_uniform_grid, 2), 11, 10),
                            (cv.on_grid(dpm.dpm_solver_3, evals_per_step=3), 12, 12),
                            (cv.singlestep(3), 10, 10), (cv.on_grid(smp.ddim), 7, 7)):
        counter = smp.NFECounter(score_fn)
        out, reported = run(counter, sde, x, nfe)
        assert reported == spent == counter.nfe and out.shape == x.shape
    counter = smp.NFECounter(score_fn)
    out, reported = cv.adaptive()(counter, sde, x, 1e-4)
    assert reported == counter.nfe > 0


@pytest.mark.parametrize("sampler, per_step, order", [
    (smp.ddim, 1, 1), (dpm.dpm_solver_2, 2, 2), (dpm.dpm_solver_3, 3, 3), (dpm.dpm_solver_pp_2m, 1, 2)])
def test_measured_orders_on_a_mixture(sampler, per_step, order):
    """Slopes over NFE 48..192; +-0.3 absorbs the O(h) correction (its local slopes lie within
    0.1 of the order from NFE 48 on for this mixture)."""
    sde, score_fn, x, x_ref = problem()
    solver = cv.Solver("s", cv.on_grid(sampler, evals_per_step=per_step), (24, 48, 96, 192), order, fit_from=48)
    curves = cv.error_vs_nfe([solver], score_fn, sde, x, x_ref)
    assert curves["s"].nfes == (24, 48, 96, 192)
    assert abs(cv.measured_order(solver, curves["s"]) - order) < 0.3


def test_a_wrong_coefficient_shows_in_the_measured_order():
    """DPM-Solver-2 with its correction doubled is first order: the fit tells it apart."""
    sde, score_fn, x, x_ref = problem()

    def wrong_second_order(score_fn, sde, x, ts):
        for s, t in zip(smp.levels(sde, ts), smp.levels(sde, ts)[1:]):
            eps_s = smp.noise_prediction(score_fn, x, s)
            s1 = smp.levels(sde, sde.inverse_lambda(torch.tensor([0.5 * (s.lam + t.lam)], dtype=F64)))[0]
            u = dpm.dpm_solver_1_step(x, eps_s, s, s1)
            d1 = smp.noise_prediction(score_fn, u, s1) - eps_s
            x = dpm.dpm_solver_1_step(x, eps_s, s, t) - 2 * t.sigma * math.expm1(t.lam - s.lam) * d1
        return x

    solver = cv.Solver("wrong", cv.on_grid(wrong_second_order, evals_per_step=2), (48, 96, 192), 2)
    assert abs(cv.measured_order(solver, cv.error_vs_nfe([solver], score_fn, sde, x, x_ref)["wrong"]) - 1) < 0.3


def test_rk45_error_falls_with_its_tolerance():
    sde, score_fn, x, x_ref = problem(8)
    solver = cv.Solver("rk45", cv.adaptive(), (1e-3, 1e-5, 1e-7), None)
    curve = cv.error_vs_nfe([solver], score_fn, sde, x, x_ref)["rk45"]
    assert list(curve.nfes) == sorted(curve.nfes) and curve.errors[0] > 100 * curve.errors[-1]


def test_bad_input_raises():
    with pytest.raises(ValueError, match="evals_per_step"):
        cv.on_grid(smp.ddim, evals_per_step=0)
    with pytest.raises(ValueError, match="nfe"):
        cv.on_grid(dpm.dpm_solver_3, evals_per_step=3)(None, VPSDE(), torch.zeros(1, 2), 2)
    with pytest.raises(ValueError, match="length"):
        cv.fitted_order([1, 2], [1.0])
    with pytest.raises(ValueError, match="positive"):
        cv.fitted_order([10, 20], [1.0, 0.0])
    with pytest.raises(ValueError, match="distinct"):
        cv.fitted_order([10, 10], [1.0, 0.5])
