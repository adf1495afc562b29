"""Checks for the exercises of chapter 2, Langevin dynamics.

The course's convention throughout: x <- x + (eta / 2) score(x) + sqrt(eta) z, z ~ N(0, I).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..distributions import GaussianMixture
from .checking import DTYPE as _DTYPE, assert_close as _assert_close, exercise_check, fail

__all__ = ["check_langevin_step", "check_ula_stationary_covariance", "check_mala_accept_prob"]

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
    print("Correct: langevin_step = x + (eta/2) score + sqrt(eta) z, for points and images.")


def _random_cov(gen, dim: int, eig_min: float, eig_max: float) -> Tensor:
    """A random symmetric positive definite (dim, dim) matrix, eigenvalues in [eig_min, eig_max],
    the smallest exactly eig_min (it sets the stability limit 4 eig_min)."""
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=_DTYPE))
    eig = eig_min + (eig_max - eig_min) * torch.rand(dim, generator=gen, dtype=_DTYPE)
    eig[0] = eig_min
    return (q * eig) @ q.T


def _stationary_covariance(cov: Tensor, eta: float) -> Tensor:
    """Sigma (I - eta Sigma^-1 / 4)^-1 through Sigma's eigenvalues, lambda / (1 - eta / (4 lambda))
    along each eigenvector (not the formula a solution is likely to use)."""
    eig, q = torch.linalg.eigh(cov.to(_DTYPE))
    return ((q * (eig / (1 - eta / (4 * eig)))) @ q.T).to(cov.dtype)


def _wrong_covariances(cov: Tensor, eta: float) -> dict[str, Tensor]:
    """What the typical mistakes give, for a dense cov and 0 < eta < 1.9 lambda_min (where each
    of these is finite)."""
    eye = torch.eye(len(cov), dtype=cov.dtype)
    inv = torch.linalg.inv(cov)
    a = eye - 0.5 * eta * inv  # x' = A x + sqrt(eta) z

    def fixed_point(a_, noise):  # the fixed point of C = a_ C a_ + noise I
        return noise * torch.linalg.inv(eye - a_ @ a_)

    diag = torch.diagonal(cov)
    return {
        "that applies s^2 / (1 - eta / (4 s^2)) to each entry of Sigma; the scalar result holds for "
        "Sigma's eigenvalues, along its eigenvectors, not entry by entry": cov / (1 - eta / (4 * cov)),
        "that treats the coordinates as independent (Sigma's diagonal only), but Sigma is not "
        "diagonal: work along its eigenvectors": torch.diag(diag / (1 - eta / (4 * diag))),
        "that is Sigma (I - d Sigma^-1 / 2)^-1 with d = eta, the other convention; in this "
        "course's convention d = eta / 2": cov @ torch.linalg.inv(eye - 0.5 * eta * inv),
        "the stationary covariance is exactly Sigma: unadjusted Langevin is biased, "
        "C = eta (I - A^2)^-1 with A = I - (eta / 2) Sigma^-1": cov.clone(),
        "that is only the first order Sigma + (eta / 4) I of the exact fixed point": cov + 0.25 * eta * eye,
        "the bias has the wrong sign: the stationary covariance lies above Sigma, "
        "Sigma (I - eta Sigma^-1 / 4)^-1": cov @ torch.linalg.inv(eye + 0.25 * eta * inv),
        "the score of N(0, Sigma) is -Sigma^-1 x, not -Sigma x": fixed_point(eye - 0.5 * eta * cov, eta),
        "Sigma^-1 is the matrix inverse (torch.linalg.inv), not 1 / Sigma entry by entry":
            fixed_point(eye - 0.5 * eta / cov, eta),
        "C = eta (I - A)^-1, but the fixed point of C = A C A + eta I has I - A^2":
            eta * torch.linalg.inv(eye - a),
        "A = I - eta Sigma^-1 drops the 1/2 of the drift (eta / 2) score": fixed_point(eye - eta * inv, eta),
        "the noise covariance is eta I, not 2 eta I": fixed_point(a, 2 * eta),
    }


@exercise_check
def check_ula_stationary_covariance(ula_stationary_covariance: Callable[[Tensor, float], Tensor]) -> None:
    """Exercise: `ula_stationary_covariance(cov: (D, D), step_size: float) -> (D, D)`, the
    stationary covariance Sigma (I - eta Sigma^-1 / 4)^-1 of unadjusted Langevin on N(0, Sigma),
    for 0 < step_size < 4 lambda_min(Sigma)."""
    gen = torch.Generator().manual_seed(21)
    narrow = torch.tensor([[0.5, 0.15], [0.15, 0.35]], dtype=_DTYPE)  # the chapter's first component

    def compare(cov, eta, what, hints=None, rtol=1e-7, atol=1e-9):
        inputs = cov.clone()
        got = ula_stationary_covariance(inputs, eta)
        if not torch.equal(inputs, cov):
            fail("ula_stationary_covariance must not modify cov in place")
        _assert_close("ula_stationary_covariance", got, _stationary_covariance(cov, eta), what,
                      rtol=rtol, atol=atol, hints=hints)

    # 0 < eta < 1.9 lambda_min on dense matrices, where every typical mistake is finite and named
    covs = [narrow] + [_random_cov(gen, dim, 0.3, 3.0) for dim in (2, 3, 5)]
    for cov in covs:
        eig_min = float(torch.linalg.eigvalsh(cov)[0])
        for eta in (0.1 * eig_min, (0.05 + 1.85 * float(torch.rand(1, generator=gen))) * eig_min):
            compare(cov, eta, f"for a {len(cov)} x {len(cov)} covariance, step_size {eta:.3g}",
                    hints=_wrong_covariances(cov, eta))
    # up to the edge of stability, eta -> 4 lambda_min: the chapter's explorer step eta = 1, and
    # random steps in [1.9, 3.95] lambda_min
    compare(narrow, 1.0, "for the chapter's narrowest component at step_size 1.0")
    for dim in (3, 4):
        cov = _random_cov(gen, dim, 0.5, 2.0)
        eta = (1.9 + 2.05 * float(torch.rand(1, generator=gen))) * 0.5
        compare(cov, eta, f"for a {dim} x {dim} covariance near the edge of stability, step_size {eta:.3g}")
    # shapes and special cases: D = 1 (the chapter's scalar formula) and a diagonal Sigma
    compare(torch.tensor([[1.0]], dtype=_DTYPE), 1.0, "for cov = [[1.0]], step_size 1.0 (answer: 4/3)")
    compare(torch.diag(torch.tensor([1.0, 0.3], dtype=_DTYPE)), 0.5, "for a diagonal covariance")
    compare(narrow.float(), 0.3, "in float32", rtol=1e-4, atol=1e-6)  # float32 round-off
    print("Correct: ULA's stationary covariance on N(0, Sigma) is Sigma (I - eta Sigma^-1 / 4)^-1.")


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
