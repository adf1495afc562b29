"""Conversions among score, eps, x0 and v: exact on a known (x0, eps) pair, round trips, and
the score wrappers against the exact score of a Gaussian mixture."""

import pytest
import torch

from course_lib import parameterization as P
from course_lib.distributions import GaussianMixture
from course_lib.sde import SubVPSDE, VESDE, VPSDE
from course_lib.utils import append_dims

F64 = torch.float64
SHAPES = [(64, 2), (16, 1, 8, 8)]
# Every quantity is O(1) to O(10) and every conversion divides at most by alpha or std >= 0.1
# (or alpha^2 + std^2 >= 0.02), so float64 round-off stays below 1e-12.
TOL = dict(rtol=1e-12, atol=1e-12)


def make_pair(shape, seed=0):
    """x0, eps, alpha, std with alpha and std drawn independently (no alpha^2 + std^2 = 1),
    and the resulting x = alpha x0 + std eps, score = -eps / std, v = alpha eps - std x0."""
    g = torch.Generator().manual_seed(seed)
    x0, eps = (torch.randn(shape, generator=g, dtype=F64) for _ in range(2))
    alpha = 0.1 + 1.9 * torch.rand(shape[0], generator=g, dtype=F64)
    std = 0.1 + 2.9 * torch.rand(shape[0], generator=g, dtype=F64)
    a, s = append_dims(alpha, len(shape)), append_dims(std, len(shape))
    return dict(x=a * x0 + s * eps, x0=x0, eps=eps, score=-eps / s, v=a * eps - s * x0, alpha=alpha, std=std)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_conversion_recovers_its_target(shape):
    q = make_pair(shape)
    x, a, s = q["x"], q["alpha"], q["std"]
    cases = {
        "eps": [P.eps_from_score(q["score"], s), P.eps_from_x0(x, q["x0"], a, s), P.eps_from_v(x, q["v"], a, s)],
        "score": [
            P.score_from_eps(q["eps"], s),
            P.score_from_x0(x, q["x0"], a, s),
            P.score_from_v(x, q["v"], a, s),
        ],
        "x0": [
            P.x0_from_eps(x, q["eps"], a, s),
            P.x0_from_score(x, q["score"], a, s),
            P.x0_from_v(x, q["v"], a, s),
        ],
        "v": [
            P.v_from_eps_x0(q["eps"], q["x0"], a, s),
            P.v_from_eps(x, q["eps"], a, s),
            P.v_from_x0(x, q["x0"], a, s),
        ],
    }
    for target, results in cases.items():
        for result in results:
            assert result.shape == shape
            torch.testing.assert_close(result, q[target], **TOL, msg=lambda m: f"{target}: {m}")


# each pair: (from a to b, from b back to a, name of a), all taking (x, value, alpha, std)
ROUND_TRIPS = [
    pytest.param(
        lambda x, e, a, s: P.score_from_eps(e, s), lambda x, sc, a, s: P.eps_from_score(sc, s), "eps", id="eps-score"
    ),
    pytest.param(P.x0_from_eps, P.eps_from_x0, "eps", id="eps-x0"),
    pytest.param(P.v_from_eps, P.eps_from_v, "eps", id="eps-v"),
    pytest.param(P.x0_from_score, P.score_from_x0, "score", id="score-x0"),
    pytest.param(
        lambda x, sc, a, s: P.v_from_eps(x, P.eps_from_score(sc, s), a, s), P.score_from_v, "score", id="score-v"
    ),
    pytest.param(P.v_from_x0, P.x0_from_v, "x0", id="x0-v"),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("forward, backward, name", ROUND_TRIPS)
def test_round_trips(shape, forward, backward, name):
    q = make_pair(shape, seed=1)
    x, a, s = q["x"], q["alpha"], q["std"]
    back = backward(x, forward(x, q[name], a, s), a, s)
    torch.testing.assert_close(back, q[name], **TOL)


def test_float_coefficients_broadcast():
    q = make_pair((4, 1, 8, 8), seed=2)
    a, s = 0.7, 1.3
    x = a * q["x0"] + s * q["eps"]
    torch.testing.assert_close(P.x0_from_v(x, P.v_from_eps_x0(q["eps"], q["x0"], a, s), a, s), q["x0"], **TOL)


def test_wrong_coefficient_shape_raises():
    q = make_pair((4, 2))
    with pytest.raises(ValueError, match="std must be a float or have shape"):
        P.score_from_eps(q["eps"], torch.ones(3, dtype=F64))


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=lambda s: type(s).__name__)
def test_wrappers_turn_exact_predictions_into_the_exact_score(sde):
    covs = [[[0.5, 0.1], [0.1, 0.3]], [[0.2, 0.0], [0.0, 0.4]]]
    gm = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [2.0, 0.0]], covs).to(dtype=F64)
    g = torch.Generator().manual_seed(3)
    x = 2.0 * torch.randn(32, 2, generator=g, dtype=F64)
    t = sde.eps + (sde.T - sde.eps) * torch.rand(32, generator=g, dtype=F64)
    exact = gm.marginal_score(x, t, sde)

    def eps_net(x, t):
        return P.eps_from_score(gm.marginal_score(x, t, sde), sde.marginal_std(t))

    def x0_net(x, t):
        return gm.denoiser(x, t, sde)

    def v_net(x, t):
        alpha, std = sde.marginal(t)
        return P.v_from_eps_x0(eps_net(x, t), x0_net(x, t), alpha, std)

    # the x0 wrapper goes through the posterior mean (computed per component, not by Tweedie),
    # so it agrees with the score only up to round-off amplified by std^2 / (alpha^2 l_min)
    torch.testing.assert_close(P.ScoreFromEps(eps_net, sde)(x, t), exact, **TOL)
    torch.testing.assert_close(P.ScoreFromX0(x0_net, sde)(x, t), exact, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(P.ScoreFromV(v_net, sde)(x, t), exact, rtol=1e-8, atol=1e-8)


def test_wrapper_registers_the_network():
    net = torch.nn.Linear(2, 2)
    wrapped = P.ScoreFromEps(lambda x, t: net(x), VPSDE())
    assert sum(p.numel() for p in wrapped.parameters()) == 0  # a plain callable is not a module
    wrapped = P.ScoreFromX0(net, VPSDE())
    assert sum(p.numel() for p in wrapped.parameters()) == 6


def test_sigma_conditioned_score_is_minus_eps_over_sigma_and_matches_the_ve_reading():
    """s(x, sigma) = -net(x, log sigma) / sigma; a network that outputs the exact noise
    posterior mean gives the exact score of the noised mixture, read by sigma or by VE time."""
    mixture = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [[[0.2, 0.05], [0.05, 0.3]], [[0.4, 0.0], [0.0, 0.1]]])
    sde = VESDE(sigma_min=0.05, sigma_max=5.0)

    class ExactEps(torch.nn.Module):  # eps(x, log sigma) = -sigma * score_sigma(x)
        def forward(self, x, log_sigma):
            sigma = log_sigma.exp()
            t = torch.log(sigma / sde.sigma_min) / sde.log_ratio
            return -append_dims(sigma, x.ndim) * mixture.marginal_score(x, t, sde)

    score = P.SigmaConditionedScore(ExactEps())
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(32, 2, generator=g, dtype=F64)
    sigma = torch.exp(torch.empty(32, dtype=F64).uniform_(-2.5, 1.5, generator=g))
    t = torch.log(sigma / sde.sigma_min) / sde.log_ratio
    torch.testing.assert_close(score(x, sigma), mixture.marginal_score(x, t, sde), **TOL)
    torch.testing.assert_close(score(x, 0.5), -ExactEps()(x, torch.full((32,), 0.5, dtype=F64).log()) / 0.5, **TOL)
