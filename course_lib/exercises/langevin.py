"""Checks for the exercises of chapter 2, Langevin dynamics.

The course's convention throughout: x <- x + (eta / 2) score(x) + sqrt(eta) z, z ~ N(0, I).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..distributions import GaussianMixture
from .checking import DTYPE as _DTYPE, assert_close as _assert_close, exercise_check, fail

__all__ = ["check_langevin_step", "check_ula_stationary_variance", "check_mala_accept_prob"]

_OTHER_CONVENTION = ("that is the other convention, x + d score + sqrt(2 d) z with d = eta; in this "
                     "course's convention, eta / 2 multiplies the score and sqrt(eta) the noise")


@exercise_check
def check_langevin_step(langevin_step: Callable[[Tensor, Tensor, float, Tensor], Tensor]) -> None:
    """Exercise: `langevin_step(x: (B, *D), score: (B, *D), step_size: float, z: (B, *D))`
    returns x + (eta / 2) score + sqrt(eta) z, with eta = step_size."""
    gen = torch.Generator().manual_seed(20)
    cases = [((4, 1), 0.5, _DTYPE), ((16, 2), 0.01, _DTYPE), ((8, 3), 2.0, _DTYPE),
             ((2, 1, 4, 4), 0.1, _DTYPE), ((16, 2), 0.3, torch.float32)]
    for shape, eta, dtype in cases:
        x, score, z = (torch.randn(shape, generator=gen, dtype=_DTYPE).to(dtype) for _ in range(3))
        inputs = (x.clone(), score.clone(), z.clone())
        got = langevin_step(*inputs[:2], eta, inputs[2])
        if not all(torch.equal(a, b) for a, b in zip(inputs, (x, score, z))):
            fail("langevin_step must not modify its inputs in place")
        hints = {
            "the score enters with the wrong sign: the drift climbs log p, + (eta / 2) score":
                x - 0.5 * eta * score + eta**0.5 * z,
            "the score term lacks the factor 1/2: (eta / 2) score": x + eta * score + eta**0.5 * z,
            _OTHER_CONVENTION: x + eta * score + (2 * eta) ** 0.5 * z,
            "the noise is sqrt(2 eta) z; in this convention it is sqrt(eta) z": x + 0.5 * eta * score
            + (2 * eta) ** 0.5 * z,
            "the noise is eta z; it is sqrt(eta) z (its variance is eta)": x + 0.5 * eta * score + eta * z,
            "the noise is missing: that is gradient ascent, not Langevin": x + 0.5 * eta * score,
            "the noise is subtracted: add + sqrt(eta) z": x + 0.5 * eta * score - eta**0.5 * z,
        }
        rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-7, 1e-9)
        _assert_close("langevin_step", got, x + 0.5 * eta * score + eta**0.5 * z,
                      f"for x of shape {shape} ({dtype}), step_size {eta}", rtol=rtol, atol=atol, hints=hints)
    print("Correct: langevin_step = x + (eta/2) score + sqrt(eta) z, for points and images, float32 and float64.")


@exercise_check
def check_ula_stationary_variance(ula_stationary_variance: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Exercise: `ula_stationary_variance(s2: Tensor, step_size: Tensor) -> Tensor`, elementwise
    the stationary variance of unadjusted Langevin on N(0, s2), for 0 < step_size < 4 s2."""
    gen = torch.Generator().manual_seed(21)
    # first 0 < eta < 1.9 s^2, where every typical wrong formula is finite and can be named,
    # then 1.9 s^2 <= eta < 4 s^2, up to the edge of stability
    s2 = torch.cat([torch.tensor([1.0, 1.0, 0.3, 2.0], dtype=_DTYPE),
                    0.3 + 5 * torch.rand(60, generator=gen, dtype=_DTYPE)])
    eta = torch.cat([torch.tensor([0.1, 1.0, 0.5, 3.0], dtype=_DTYPE),
                     1.9 * torch.rand(60, generator=gen, dtype=_DTYPE) * s2[4:]])
    a = 1 - eta / (2 * s2)  # x' = a x + sqrt(eta) z
    hints = {
        "that is s^2 / (1 - d / (2 s^2)) with d = eta; in this course's convention d = eta / 2":
            s2 / (1 - eta / (2 * s2)),
        "the variance is exactly s^2: unadjusted Langevin is biased, v = eta / (1 - a^2) with "
        "a = 1 - eta / (2 s^2), and a^2 keeps its eta^2 / (4 s^4) term": s2.clone(),
        "that is only the first order s^2 + eta / 4 of the exact fixed point": s2 + eta / 4,
        "the bias has the wrong sign: the stationary variance is above s^2": s2 / (1 + eta / (4 * s2)),
        "in 1 - a^2 the last term is eta^2 / (4 s^4), with eta squared": s2 / (1 - 1 / (4 * s2)),
        "v = eta / (1 - a), but the fixed point of v = a^2 v + eta has 1 - a^2": eta / (1 - a),
        "a = 1 - eta / s^2 drops the 1/2 of the drift (eta / 2) score": eta / (1 - (1 - eta / s2) ** 2),
        "the noise variance is eta, not 2 eta": 2 * eta / (1 - a**2),
    }
    got = ula_stationary_variance(s2.clone(), eta.clone())
    _assert_close("ula_stationary_variance", got, s2 / (1 - eta / (4 * s2)), "for 0 < step_size < 1.9 s2",
                  hints=hints)
    large = (1.9 + 2.05 * torch.rand(60, generator=gen, dtype=_DTYPE)) * s2[4:]
    got = ula_stationary_variance(s2[4:].clone(), large.clone())
    _assert_close("ula_stationary_variance", got, s2[4:] / (1 - large / (4 * s2[4:])),
                  "for 1.9 s2 <= step_size < 3.95 s2, near the edge of stability")
    one = ula_stationary_variance(torch.tensor(1.0, dtype=_DTYPE), torch.tensor(1.0, dtype=_DTYPE))
    _assert_close("ula_stationary_variance", one, torch.tensor(4 / 3, dtype=_DTYPE), "for 0-d tensors s2 = eta = 1")
    print("Correct: the stationary variance of ULA on N(0, s^2) is s^2 / (1 - eta / (4 s^2)).")


def _independent_accept_prob(x, y, log_prob, score, eta):
    """min(1, p(y) q(x | y) / (p(x) q(y | x))) with q(. | u) = N(u + (eta / 2) s(u), eta I),
    written with torch.distributions (not course_lib.langevin)."""
    def log_q(to, frm):
        return torch.distributions.Normal(frm + 0.5 * eta * score(frm), eta**0.5).log_prob(to).sum(-1)

    return (log_prob(y) - log_prob(x) + log_q(x, y) - log_q(y, x)).clamp(max=0).exp()


def _wrong_accept_probs(x, y, log_prob, score, eta) -> dict[str, Tensor]:
    def log_q(to, frm, mean_factor=0.5, var=eta, score_at=None):
        mean = frm + mean_factor * eta * score(frm if score_at is None else score_at)
        return -(to - mean).square().sum(-1) / (2 * var)

    d_log_p = log_prob(y) - log_prob(x)
    forward, backward = log_q(y, x), log_q(x, y)
    return {
        "an acceptance probability cannot exceed 1: take min(1, ratio)": (d_log_p + backward - forward).exp(),
        "that is random-walk Metropolis, p(y) / p(x): the Langevin proposal is not symmetric, "
        "include q(x | y) / q(y | x)": d_log_p.clamp(max=0).exp(),
        "the proposal ratio is upside down: q(x | y) / q(y | x)": (d_log_p - backward + forward).clamp(max=0).exp(),
        "the whole ratio is upside down: p(y) q(x | y) / (p(x) q(y | x))":
            (-d_log_p - backward + forward).clamp(max=0).exp(),
        "the proposal mean is x + (eta / 2) score(x), with the factor 1/2":
            (d_log_p + log_q(x, y, 1.0) - log_q(y, x, 1.0)).clamp(max=0).exp(),
        "the proposal variance is eta (noise sqrt(eta) z), not 2 eta":
            (d_log_p + log_q(x, y, var=2 * eta) - log_q(y, x, var=2 * eta)).clamp(max=0).exp(),
        "q(x | y) is centred at y + (eta / 2) score(y): the score at y, not at x":
            (d_log_p + log_q(x, y, score_at=x) - forward).clamp(max=0).exp(),
    }


@exercise_check
def check_mala_accept_prob(mala_accept_prob: Callable) -> None:
    """Exercise: `mala_accept_prob(x: (B, D), y: (B, D), log_prob, score, step_size) -> (B,)`, the
    probability min(1, p(y) q(x | y) / (p(x) q(y | x))) of accepting the Langevin proposal y."""
    gen = torch.Generator().manual_seed(22)
    mixture = GaussianMixture(torch.tensor([0.3, 0.7], dtype=_DTYPE),
                              torch.tensor([[-1.0, 0.5], [1.5, -0.5]], dtype=_DTYPE),
                              torch.tensor([[[0.5, 0.2], [0.2, 0.4]], [[0.8, 0.0], [0.0, 0.3]]], dtype=_DTYPE))
    var = torch.tensor([0.5, 1.0, 2.0], dtype=_DTYPE)
    targets = {  # (log p up to a constant, its score, D)
        "N(0, 1) in D = 1": (lambda v: -0.5 * v.square().sum(-1) + 3.0, lambda v: -v, 1),
        "an anisotropic Gaussian in D = 3": (lambda v: -(v.square() / (2 * var)).sum(-1), lambda v: -v / var, 3),
        "a Gaussian mixture in D = 2": (mixture.log_prob, mixture.score, 2),
    }
    for what, (log_prob, score, dim) in targets.items():
        for eta in (0.05, 0.5):
            x = torch.randn(64, dim, generator=gen, dtype=_DTYPE)
            y = x + 0.5 * eta * score(x) + eta**0.5 * torch.randn(64, dim, generator=gen, dtype=_DTYPE)
            inputs = (x.clone(), y.clone())
            got = mala_accept_prob(inputs[0], inputs[1], log_prob, score, eta)
            if not all(torch.equal(a, b) for a, b in zip(inputs, (x, y))):
                fail("mala_accept_prob must not modify its inputs in place")
            expected = _independent_accept_prob(x, y, log_prob, score, eta)
            _assert_close("mala_accept_prob", got, expected, f"for {what}, step_size {eta}",
                          hints=_wrong_accept_probs(x, y, log_prob, score, eta))
    print("Correct: mala_accept_prob = min(1, p(y) q(x|y) / (p(x) q(y|x))) on Gaussians and a mixture.")
