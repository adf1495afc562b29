"""The probes' variance claims in course_lib.utils, by exact enumeration and closed forms."""

import itertools

import numpy as np
import torch

from course_lib.utils import rademacher_like


def _hutchinson_variance_rademacher(a: np.ndarray) -> float:
    """Var(v^T A v) over all 2^D sign vectors v, exactly."""
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=a.shape[0])))
    return float(np.einsum("ni,ij,nj->n", signs, a, signs).var())


def test_rademacher_has_the_least_variance_among_iid_probes():
    """For symmetric A, i.i.d. zero-mean unit-variance entries with fourth moment m4 give
    Var(v^T A v) = 2 sum_{i != j} A_ij^2 + (m4 - 1) sum_i A_ii^2, least at m4 = 1 (Rademacher)."""
    rng = np.random.default_rng(0)
    b = rng.standard_normal((5, 5))
    a = b + b.T
    off_diagonal = float((a**2).sum() - (np.diag(a) ** 2).sum())
    assert np.isclose(_hutchinson_variance_rademacher(a), 2 * off_diagonal, rtol=1e-12)
    gaussian = 2 * float((a**2).sum())  # m4 = 3
    assert _hutchinson_variance_rademacher(a) < gaussian


def test_dependent_probes_can_beat_rademacher():
    """The docstring's counterexample: D = 6, A = 11^T - I. sqrt(D) u with u uniform on the
    sphere has Var = 2 D / (D + 2) (tr A^2 - (tr A)^2 / D) = 45; Rademacher has 60."""
    d = 6
    a = np.ones((d, d)) - np.eye(d)
    assert _hutchinson_variance_rademacher(a) == 60.0
    sphere = 2 * d / (d + 2) * (np.trace(a @ a) - np.trace(a) ** 2 / d)
    assert sphere == 45.0
    # and by Monte Carlo: the sample variance of n draws has SE sqrt(Var((q - mean)^2) / n)
    u = torch.randn(400_000, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = (d**0.5 * u / u.norm(dim=1, keepdim=True)).numpy()
    q = np.einsum("ni,ij,nj->n", v, a, v)
    standard_error = np.sqrt(((q - q.mean()) ** 2).var() / len(q))
    assert abs(q.var() - 45.0) < 5 * standard_error < 1.0  # 5 SE, and far from Rademacher's 60


def test_rademacher_like_is_plus_minus_one_with_identity_second_moment():
    x = torch.empty(200_000, 3, dtype=torch.float32)
    v = rademacher_like(x, generator=torch.Generator().manual_seed(1))
    assert v.dtype == x.dtype and v.shape == x.shape and set(v.unique().tolist()) == {-1.0, 1.0}
    second = (v.T.double() @ v.double()) / len(v)
    # each entry of the sample E[v v^T] has SE 1 / sqrt(n) = 2.2e-3 off the diagonal, 0 on it
    assert torch.allclose(second, torch.eye(3, dtype=torch.float64), atol=5 / len(v) ** 0.5)
