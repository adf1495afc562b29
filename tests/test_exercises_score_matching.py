"""Chapter 3's exercise checks: the reference solutions of the chapter pass, the typical wrong
answers are rejected with a message naming the mistake, the untouched stub is "not implemented
yet", and the checks' own closed forms agree with Monte Carlo."""

import math
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib import exercises, student_version
from course_lib.losses import implicit_score_matching_loss
from course_lib.utils import rademacher_like

CHAPTER = Path(__file__).resolve().parents[1] / "book" / "03_score_matching.ipynb"
F64 = torch.float64


@pytest.fixture(scope="module")
def solutions():
    """name -> function for every exercise cell of the chapter (cells with solution markers)."""
    namespace = {"torch": torch}
    for cell in nbformat.read(CHAPTER, as_version=4).cells:
        if cell.cell_type == "code" and student_version.BEGIN in cell.source:
            exec(cell.source, namespace)
    return namespace


@pytest.fixture(scope="module")
def stubs():
    """The student edition's functions: every solution replaced by `raise NotImplementedError`."""
    namespace = {"torch": torch}
    nb = student_version.student_notebook(nbformat.read(CHAPTER, as_version=4))
    for cell in nb.cells:
        if cell.cell_type == "code" and "YOUR CODE HERE" in cell.source:
            exec(cell.source, namespace)
    return namespace


CHECKS = {
    "dsm_target": exercises.check_dsm_target,
    "hutchinson_trace": exercises.check_hutchinson_trace,
    "ism_gaussian": exercises.check_ism_gaussian,
    "rademacher_variance": exercises.check_rademacher_variance,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_reference_solution_passes(solutions, name, capsys):
    CHECKS[name](solutions[name])
    assert capsys.readouterr().out.startswith("Correct:")


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_untouched_stub_is_not_implemented_yet(stubs, name):
    with pytest.raises(exercises.ExerciseFailure, match=f"{name} is not implemented yet"):
        CHECKS[name](stubs[name])


@pytest.mark.parametrize("wrong, message", [
    (lambda x, y, s: (y - x) / s**2, "sign is flipped"),
    (lambda x, y, s: -(y - x) / s, "divides by sigma instead of sigma\\^2"),
    (lambda x, y, s: (y - x) / s, "noise z"),
    (lambda x, y, s: -(y - x), "division by sigma\\^2 is missing"),
    (lambda x, y, s: -y / s**2, "centred at the clean x"),
    (lambda x, y, s: -(y - x) / (2 * s**2), "factor 1/2 too many"),
    (lambda x, y, s: (-(y - x) / s**2).to(F64), "keep the inputs' dtype"),  # float32 case
    (lambda x, y, s: -(y - x).sum(1) / s**2, "shape"),
    (lambda x, y, s: -(y - x) / s**2 + 1e-3, "off by"),
], ids=["sign", "sigma", "z", "no-division", "not-centred", "half", "dtype", "shape", "off"])
def test_dsm_target_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_dsm_target(wrong)


def test_dsm_target_must_not_modify_its_inputs():
    def in_place(x, x_noisy, sigma):
        x_noisy -= x
        return -x_noisy / sigma**2

    with pytest.raises(exercises.ExerciseFailure, match="in place"):
        exercises.check_dsm_target(in_place)


def _probes(x, n_probes, generator):
    return [rademacher_like(x, generator=generator) for _ in range(n_probes)]


def _vjp(field, x, v):
    x = x.detach().requires_grad_(True)
    (jt_v,) = torch.autograd.grad(field(x), x, grad_outputs=v)
    return jt_v


def summed(field, x, n_probes, generator=None):
    return sum((v * _vjp(field, x, v)).sum(1) for v in _probes(x, n_probes, generator))


def jv_squared(field, x, n_probes, generator=None):  # ||J v||^2 estimates tr(J^T J)
    return sum(_vjp(field, x, v).pow(2).sum(1) for v in _probes(x, n_probes, generator)) / n_probes


def probe_norm(field, x, n_probes, generator=None):
    return sum(v.pow(2).sum(1) for v in _probes(x, n_probes, generator)) / n_probes


def gaussian_probes(field, x, n_probes, generator=None):
    vs = [torch.randn(x.shape, generator=generator, dtype=x.dtype) for _ in range(n_probes)]
    return sum((v * _vjp(field, x, v)).sum(1) for v in vs) / n_probes


def one_probe_reused(field, x, n_probes, generator=None):
    v = rademacher_like(x, generator=generator)
    return (v * _vjp(field, x, v)).sum(1)


def exact_trace(field, x, n_probes, generator=None):  # the full Jacobian, not the estimate
    x = x.detach().requires_grad_(True)
    out = field(x)
    rows = [torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1])]
    return sum(rows).detach()


def negated(field, x, n_probes, generator=None):
    return -sum((v * _vjp(field, x, v)).sum(1) for v in _probes(x, n_probes, generator)) / n_probes


@pytest.mark.parametrize("wrong, message", [
    (summed, "sums the n_probes estimates"),
    (jv_squared, "tr\\(J\\^T J\\)"),
    (probe_norm, "v\\^T v = D"),
    (negated, "sign is flipped"),
    (gaussian_probes, "Rademacher probes"),
    (one_probe_reused, "drawn afresh"),
    (exact_trace, "exact trace"),
    (lambda f, x, n, generator=None: torch.zeros(x.shape[0], 1, dtype=x.dtype), "shape"),
], ids=["sum", "frobenius", "probe-norm", "sign", "gaussian", "reused", "exact", "shape"])
def test_hutchinson_trace_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_hutchinson_trace(wrong)


def _spread(m, mean, cov):
    return torch.trace(cov) + (mean - m).pow(2).sum()


@pytest.mark.parametrize("wrong, message", [
    (lambda m, v, mu, c: -len(mu) / v + _spread(m, mu, c) / v**2, "1/2 of"),
    (lambda m, v, mu, c: len(mu) / v + _spread(m, mu, c) / (2 * v**2), "wrong sign"),
    (lambda m, v, mu, c: -1 / v + _spread(m, mu, c) / (2 * v**2), "not -1 / v"),
    (lambda m, v, mu, c: -len(mu) / v**2 + _spread(m, mu, c) / (2 * v**2), "v not squared"),
    (lambda m, v, mu, c: -len(mu) / v + _spread(m, mu, c) / (2 * v), "v squared"),
    (lambda m, v, mu, c: -len(mu) / v + torch.trace(c) / (2 * v**2), "distance of the means"),
    (lambda m, v, mu, c: -len(mu) / v + (mu - m).pow(2).sum() / (2 * v**2), "trace of cov is missing"),
    (lambda m, v, mu, c: _spread(m, mu, c) / (2 * v**2), "trace term"),
    (lambda m, v, mu, c: -len(mu) / v + (c.sum() + (mu - m).pow(2).sum()) / (2 * v**2), "every entry of cov"),
], ids=["half", "trace-sign", "trace-one", "trace-v2", "v", "means", "cov", "no-trace", "cov-sum"])
def test_ism_gaussian_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_ism_gaussian(wrong)


@pytest.mark.parametrize("wrap", [float, lambda t: t.reshape(1), lambda t: t.reshape(1, 1)],
                         ids=["float", "shape-1", "shape-1x1"])
def test_scalar_answers_of_any_one_element_form_pass(solutions, wrap, capsys):
    for name in ("ism_gaussian", "rademacher_variance"):
        CHECKS[name](lambda *args, f=solutions[name]: wrap(f(*args)))
        assert capsys.readouterr().out.startswith("Correct:")


def test_ism_gaussian_closed_form_matches_monte_carlo(solutions):
    # the check's formula against the library's implicit loss on samples: the loss is a mean of
    # iid terms, so 4.5 standard errors of that mean bound the difference
    gen = torch.Generator().manual_seed(0)
    mean, m, v = torch.tensor([0.5, -1.0, 2.0], dtype=F64), torch.tensor([0.0, 0.3, 1.0], dtype=F64), 1.3
    a = torch.randn(3, 3, generator=gen, dtype=F64)
    cov = a @ a.T / 3 + 0.2 * torch.eye(3, dtype=F64)
    x = torch.distributions.MultivariateNormal(mean, cov).sample((200_000,))
    score = lambda y: -(y - m) / v
    per_sample = -3 / v + (x - m).pow(2).sum(1) / (2 * v**2)
    se = float(per_sample.std()) / math.sqrt(len(x))
    loss = float(implicit_score_matching_loss(score, x).detach())
    assert abs(loss - float(solutions["ism_gaussian"](m, v, mean, cov))) < 4.5 * se


@pytest.mark.parametrize("wrong, message", [
    (lambda a: 2 * (0.5 * (a + a.T)).pow(2).sum(), "Gaussian probes"),
    (lambda a: 2 * (a - torch.diag(a.diagonal())).pow(2).sum(), "symmetric part"),
    (lambda a: ((0.5 * (a + a.T)) - torch.diag(a.diagonal())).pow(2).sum(), "factor 2"),
    (lambda a: 4 * ((0.5 * (a + a.T)) - torch.diag(a.diagonal())).pow(2).sum(), "twice the variance"),
    (lambda a: float(2 * ((0.5 * (a + a.T)) - torch.diag(a.diagonal())).pow(2).sum()) + 1.0, "off by"),
], ids=["gaussian", "unsymmetrized", "factor-2", "twice", "off"])
def test_rademacher_variance_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_rademacher_variance(wrong)


def test_rademacher_variance_closed_form_matches_monte_carlo(solutions):
    # sample variance of v^T A v over n probes: relative standard error ~ sqrt(2 / n) for nearly
    # normal values; v^T A v is a sum of many +-S_ij terms here (D = 6), 5 such errors bound it
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(6, 6, generator=gen, dtype=F64)
    v = rademacher_like(torch.empty(100_000, 6, dtype=F64), generator=gen)
    values = ((v @ a) * v).sum(1)
    exact = float(solutions["rademacher_variance"](a))
    assert abs(float(values.var()) / exact - 1) < 5 * math.sqrt(2 / len(values))
    assert abs(float(values.mean()) - float(torch.trace(a))) < 5 * math.sqrt(exact / len(values))
