"""Checks for the exercises of chapter 3, score matching."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .checking import DTYPE as _DTYPE, assert_close as _assert_close, exercise_check, fail

__all__ = ["check_dsm_target", "check_hutchinson_trace", "check_ism_gaussian", "check_rademacher_variance"]


@exercise_check
def check_dsm_target(dsm_target: Callable[[Tensor, Tensor, float], Tensor]) -> None:
    """Exercise: `dsm_target(x: (B, D), x_noisy: (B, D), sigma: float) -> (B, D)`, the score
    grad_{x~} log N(x~; x, sigma^2 I) = -(x~ - x) / sigma^2 of the Gaussian noising kernel."""
    gen = torch.Generator().manual_seed(30)
    # no sigma where two mistakes coincide (sigma = 1/2 makes 2 sigma^2 = sigma, 1/sqrt(2) makes it 1)
    cases = [((1, 1), 0.4, _DTYPE), ((16, 2), 0.1, _DTYPE), ((8, 3), 2.0, _DTYPE), ((16, 2), 0.3, torch.float32)]
    for shape, sigma, dtype in cases:
        x = (3 * torch.randn(shape, generator=gen, dtype=_DTYPE)).to(dtype)
        x_noisy = x + sigma * torch.randn(shape, generator=gen, dtype=_DTYPE).to(dtype)
        inputs = (x.clone(), x_noisy.clone())
        got = dsm_target(*inputs, sigma)
        if not all(torch.equal(a, b) for a, b in zip(inputs, (x, x_noisy))):
            fail("dsm_target must not modify its inputs in place")
        # the independent answer: autograd of the kernel's log-density in x~
        y = x_noisy.detach().to(_DTYPE).requires_grad_(True)
        log_q = torch.distributions.Normal(x.to(_DTYPE), sigma).log_prob(y).sum()
        (expected,) = torch.autograd.grad(log_q, y)
        diff, z = x_noisy - x, (x_noisy - x) / sigma
        hints = {
            "the sign is flipped: the target points from x~ back towards the clean x, -(x~ - x) / sigma^2":
                diff / sigma**2,
            "it divides by sigma instead of sigma^2 (that is -z, the negated noise; the score is -z / sigma)":
                -diff / sigma,
            "that is the noise z = (x~ - x) / sigma itself; the score of the kernel is -z / sigma": z,
            "the division by sigma^2 is missing": -diff,
            "a factor 1/2 too many: the gradient of ||x~ - x||^2 / (2 sigma^2) is (x~ - x) / sigma^2, the 2s cancel":
                -diff / (2 * sigma**2),
            "that is the score of N(0, sigma^2 I) at x~; the kernel is centred at the clean x": -x_noisy / sigma**2,
        }
        rtol, atol = (1e-5, 1e-5) if dtype == torch.float32 else (1e-7, 1e-9)
        _assert_close("dsm_target", got, expected.to(dtype), f"for x of shape {shape} ({dtype}), sigma {sigma}",
                      rtol=rtol, atol=atol, hints={k: v.to(dtype) for k, v in hints.items()})
    print("Correct: dsm_target = -(x~ - x) / sigma^2 = grad log N(x~; x, sigma^2 I), in float32 and float64.")


def _diagonal_fields(gen: torch.Generator, dim: int):
    """Fields with a diagonal Jacobian, whose every Rademacher estimate is exact."""
    c = 0.5 + torch.rand(dim, generator=gen, dtype=_DTYPE)
    scale = lambda y: c * y
    squash = lambda y: c * torch.tanh(y)
    slope = lambda y: c * (1 - torch.tanh(y) ** 2)  # the diagonal of d(c tanh(x)) / dx
    return {  # what -> (field, its trace, ||J v||^2 for any +-1 probe v)
        "the linear field c * x": (scale, lambda y: c.sum().expand(y.shape[0]),
                                   lambda y: (c**2).sum().expand(y.shape[0])),
        "the field c * tanh(x)": (squash, lambda y: slope(y).sum(1), lambda y: slope(y).pow(2).sum(1)),
    }


@exercise_check
def check_hutchinson_trace(hutchinson_trace: Callable[..., Tensor]) -> None:
    """Exercise: `hutchinson_trace(field, x: (B, D), n_probes: int, generator=None) -> (B,)`, the
    average over n_probes Rademacher probes v of v^T (d field / dx) v, per sample."""
    gen = torch.Generator().manual_seed(31)
    # 1. diagonal Jacobians: v_i^2 = 1 makes every Rademacher estimate exact, so wrong formulas show
    for dim, n_probes in ((1, 1), (3, 3), (5, 4)):
        x = torch.randn(6, dim, generator=gen, dtype=_DTYPE)
        for what, (field, trace, frob) in _diagonal_fields(gen, dim).items():
            got = hutchinson_trace(field, x.clone(), n_probes, generator=torch.Generator().manual_seed(1))
            exact = trace(x)
            hints = {
                "it sums the n_probes estimates instead of averaging them": n_probes * exact,
                "the sign is flipped: v^T J v, not -v^T J v": -exact,
                "that is ||J v||^2, an estimate of tr(J^T J), not of tr(J): take v^T (J v)": frob(x),
                "that is v^T v = D, the probes' own squared norm: multiply v by J first":
                    torch.full_like(exact, float(dim)),
            }
            where = f"for {what} in dimension {dim} with {n_probes} probes"
            got_t = got.detach() if torch.is_tensor(got) else got
            if torch.is_tensor(got_t) and got_t.shape == exact.shape and got_t.dtype == exact.dtype \
                    and not any(torch.allclose(got_t, h) for h in hints.values()) \
                    and not torch.allclose(got_t, exact, rtol=1e-7, atol=1e-9):
                err = float((got_t - exact).abs().max())
                fail(f"hutchinson_trace is off by up to {err:.3g} {where}; with a diagonal Jacobian, "
                     "Rademacher probes (entries +-1, so v_i^2 = 1) give the exact trace: are your "
                     "probes +-1 with probability 1/2 each (not Gaussian, not uniform on [0, 1])?")
            _assert_close("hutchinson_trace", got_t, exact, where, hints=hints)
    # 2. a dense Jacobian: unbiased, with the spread of n_probes independent probes
    dim, n_probes = 4, 4000
    a = torch.randn(dim, dim, generator=gen, dtype=_DTYPE)
    x = torch.randn(3, dim, generator=gen, dtype=_DTYPE)
    got = hutchinson_trace(lambda y: y @ a.T, x, n_probes, generator=torch.Generator().manual_seed(2))
    got = got.detach() if torch.is_tensor(got) else got
    _check_shape(got, x)
    sym = 0.5 * (a + a.T)
    se = math.sqrt(2 * float(sym.pow(2).sum() - sym.diagonal().pow(2).sum()) / n_probes)
    # 5 standard errors: a correct estimator fails with probability below 2e-6 per sample
    if float((got - torch.trace(a)).abs().max()) < 1e-9:
        fail("hutchinson_trace returns the exact trace for the dense field x @ A.T: that is the "
             "full Jacobian's diagonal, not the random estimate; use one v^T J v per probe")
    if float((got - torch.trace(a)).abs().max()) > 5 * se:
        fail(f"hutchinson_trace is biased or too noisy for the dense field x @ A.T: its {n_probes}-probe "
             f"estimates {got.tolist()} should lie within {5 * se:.3g} of tr(A) = {float(torch.trace(a)):.4f}; "
             "are the probes drawn afresh for each of the n_probes?")
    print("Correct: hutchinson_trace is exact for diagonal Jacobians and unbiased for a dense one.")


def _check_shape(got, x: Tensor) -> None:
    if not torch.is_tensor(got) or got.shape != (x.shape[0],):
        shape = tuple(got.shape) if torch.is_tensor(got) else type(got).__name__
        fail(f"hutchinson_trace must return one estimate per sample, shape ({x.shape[0]},); got {shape}")


def _as_scalar(got):
    """A Python number, or a 1-element tensor of any shape, as a 0-d tensor; anything else as is."""
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        return torch.tensor(float(got), dtype=_DTYPE)
    if torch.is_tensor(got) and got.numel() == 1:
        return got.reshape(())
    return got


@exercise_check
def check_ism_gaussian(ism_gaussian: Callable[[Tensor, float, Tensor, Tensor], Tensor]) -> None:
    """Exercise: `ism_gaussian(m: (D,), v: float, mean: (D,), cov: (D, D)) -> 0-d tensor`, the
    implicit score-matching objective E[tr grad s + ||s||^2 / 2] of the model s(x) = -(x - m) / v
    under data x ~ N(mean, cov), in closed form."""
    gen = torch.Generator().manual_seed(32)
    for dim, v in ((1, 0.5), (2, 1.7), (5, 0.3)):
        a = torch.randn(dim, dim, generator=gen, dtype=_DTYPE)
        cov = a @ a.T / dim + 0.2 * torch.eye(dim, dtype=_DTYPE)
        mean, m = torch.randn(dim, generator=gen, dtype=_DTYPE), torch.randn(dim, generator=gen, dtype=_DTYPE)
        spread = torch.trace(cov) + (mean - m).pow(2).sum()  # E||x - m||^2
        exact = -dim / v + spread / (2 * v**2)
        hints = {
            "the 1/2 of ||s||^2 / 2 is missing": -dim / v + spread / v**2,
            "the trace has the wrong sign: grad s = -I / v, so tr grad s = -D / v": dim / v + spread / (2 * v**2),
            "the trace of -I / v is -D / v, not -1 / v": -1 / v + spread / (2 * v**2),
            "the trace is -D / v, with v not squared: d/dx_i of -(x_i - m_i) / v is -1 / v":
                -dim / v**2 + spread / (2 * v**2),
            "||s||^2 = ||x - m||^2 / v^2, with v squared": -dim / v + spread / (2 * v),
            "E||x - m||^2 = tr(cov) + ||mean - m||^2: the squared distance of the means is missing":
                -dim / v + torch.trace(cov) / (2 * v**2),
            "E||x - m||^2 = tr(cov) + ||mean - m||^2: the trace of cov is missing":
                -dim / v + (mean - m).pow(2).sum() / (2 * v**2),
            "the trace term tr grad s = -D / v is missing": spread / (2 * v**2),
            "that sums every entry of cov; E||x - mean||^2 = tr(cov), its diagonal only":
                -dim / v + (cov.sum() + (mean - m).pow(2).sum()) / (2 * v**2),
        }
        inputs = (m.clone(), mean.clone(), cov.clone())
        got = ism_gaussian(inputs[0], v, inputs[1], inputs[2])
        if not all(torch.equal(p, q) for p, q in zip(inputs, (m, mean, cov))):
            fail("ism_gaussian must not modify its inputs in place")
        got = _as_scalar(got)
        _assert_close("ism_gaussian", got, exact, f"in dimension {dim} with v = {v}", hints=hints)
    print("Correct: ism_gaussian = -D / v + (tr cov + ||mean - m||^2) / (2 v^2).")


@exercise_check
def check_rademacher_variance(rademacher_variance: Callable[[Tensor], Tensor]) -> None:
    """Exercise: `rademacher_variance(a: (D, D)) -> 0-d tensor`, the variance of v^T A v for a
    Rademacher probe v (entries +-1 with probability 1/2): 2 sum_{i != j} S_ij^2, S = (A + A^T) / 2."""
    gen = torch.Generator().manual_seed(33)
    # [[2, 3], [1, -1]]: every mistake below gives its own value (with [[1, 3], [0, -1]] two coincide)
    cases = [torch.tensor([[2.0]], dtype=_DTYPE), torch.tensor([[2.0, 3.0], [1.0, -1.0]], dtype=_DTYPE)]
    cases += [torch.randn(d, d, generator=gen, dtype=_DTYPE) for d in (3, 6)]
    for a in cases:
        sym = 0.5 * (a + a.T)
        off = sym - torch.diag(sym.diagonal())
        exact = 2 * off.pow(2).sum()
        a_off = a - torch.diag(a.diagonal())
        hints = {
            "that includes the diagonal: 2 ||S||_F^2 is the variance for Gaussian probes; with v_i^2 = 1 "
            "the diagonal of A adds nothing random": 2 * sym.pow(2).sum(),
            "v^T A v only sees the symmetric part S = (A + A^T) / 2: use S_ij, not A_ij": 2 * a_off.pow(2).sum(),
            "the factor 2 is missing (each pair i != j appears twice: v_i v_j S_ij + v_j v_i S_ji)": off.pow(2).sum(),
            "that is twice the variance: the sum over i != j already counts each pair twice, so "
            "Var = sum_{i<j} (2 S_ij)^2 = 2 sum_{i != j} S_ij^2": 4 * off.pow(2).sum(),
        }
        got = _as_scalar(rademacher_variance(a.clone()))
        where = f"for A of shape {tuple(a.shape)}"
        hints = {k: v for k, v in hints.items() if not torch.allclose(v, exact)}  # 1-D: some coincide
        _assert_close("rademacher_variance", got, exact, where, hints=hints)
    print("Correct: Var(v^T A v) = 2 sum_{i != j} S_ij^2 for Rademacher v, S = (A + A^T) / 2.")
