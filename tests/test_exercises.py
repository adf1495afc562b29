"""The exercise checks accept the reference solutions, reject wrong ones, and the student
edition removes the solutions so that the checks fail until the work is done."""

import json
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib import exercises, student_version

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_1 = ROOT / "book" / "01_score_function.ipynb"


def _solutions(path):
    """name -> function for every exercise cell of a chapter (cells with solution markers)."""
    namespace = {"torch": torch}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and student_version.BEGIN in cell.source:
            exec(cell.source, namespace)
    return namespace


def test_reference_solutions_pass():
    ns = _solutions(CHAPTER_1)
    exercises.check_gaussian_score(ns["gaussian_score"])
    exercises.check_curl_2d(ns["curl_2d"])
    exercises.check_mixture_score(ns["mixture_score"])


def _reference_gaussian_score(x, mean, cov):
    return -torch.linalg.solve(cov, (x - mean).T).T


@pytest.mark.parametrize("wrong, message", [
    (lambda x, m, c: torch.linalg.solve(c, (x - m).T).T, "sign is flipped"),
    (lambda x, m, c: -(x - m) @ c, "multiplies by cov instead of solving"),
    (lambda x, m, c: -torch.linalg.solve(c, x.T).T, "forgets the mean"),
    (lambda x, m, c: -torch.linalg.solve(c, x - m), "columns of b, but the points are the rows"),
    (lambda x, m, c: _reference_gaussian_score(x, m, c).double(), "keep the inputs' dtype"),
    (lambda x, m, c: _reference_gaussian_score(x, m, c)[:1], "returned shape"),
    (lambda x, m, c: _reference_gaussian_score(x, m, c) + 1e-5, "off by"),
])
def test_gaussian_score_check_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_gaussian_score(wrong)


@pytest.mark.parametrize("method", [
    lambda x, m, c: -(x - m) @ torch.linalg.inv(c),
    lambda x, m, c: -(x - m) @ torch.linalg.pinv(c, hermitian=True),
    lambda x, m, c: -torch.linalg.lstsq(c, (x - m).T).solution.T,
    lambda x, m, c: -torch.cholesky_solve((x - m).T, torch.linalg.cholesky(c)).T,
], ids=["inv", "pinv", "lstsq", "cholesky_solve"])
def test_gaussian_score_check_accepts_any_correct_method(method, capsys):
    """The exercise advises a solve but cannot enforce it: an explicit inverse gives the same
    answer to round-off on well-conditioned covariances, so the statement says it is a hint."""
    exercises.check_gaussian_score(method)
    assert capsys.readouterr().out.startswith("Correct:")


def _reference_curl(field, x):
    x = x.detach().requires_grad_(True)
    v = field(x)
    (grad_v1,) = torch.autograd.grad(v[:, 0].sum(), x, retain_graph=True)
    (grad_v2,) = torch.autograd.grad(v[:, 1].sum(), x)
    return (grad_v2[:, 0] - grad_v1[:, 1]).detach()


def _jacobian_curl(jacobian):
    def curl_2d(field, x):
        j = jacobian(lambda y: field(y).sum(0), x)  # (2, B, 2): d sum_b v_i(x_b) / d x_bj
        return (j[1][:, 0] - j[0][:, 1]).detach()
    return curl_2d


def _finite_difference_curl(h, central=True):
    def curl_2d(field, x):
        e1, e2 = torch.tensor([h, 0.0], dtype=x.dtype), torch.tensor([0.0, h], dtype=x.dtype)
        if central:
            d1, d2 = (field(x + e1) - field(x - e1)) / (2 * h), (field(x + e2) - field(x - e2)) / (2 * h)
        else:
            d1, d2 = (field(x + e1) - field(x)) / h, (field(x + e2) - field(x)) / h
        return d1[:, 1] - d2[:, 0]
    return curl_2d


def _per_row_jacobian_curl(field, x):
    j = torch.func.vmap(torch.func.jacrev(lambda row: field(row[None])[0]))(x)  # (B, 2, 2)
    return j[:, 1, 0] - j[:, 0, 1]


@pytest.mark.parametrize("curl_2d", [
    _jacobian_curl(torch.autograd.functional.jacobian),
    _jacobian_curl(lambda f, x: torch.func.jacrev(f)(x)),
    _per_row_jacobian_curl,
], ids=["autograd.functional.jacobian", "func.jacrev", "vmap-jacrev"])
def test_curl_check_accepts_other_autograd_routes(curl_2d, capsys):
    exercises.check_curl_2d(curl_2d)
    assert capsys.readouterr().out.startswith("Correct:")


@pytest.mark.parametrize("h", [1e-4, 1e-5, 1e-6])
@pytest.mark.parametrize("central", [True, False])
def test_curl_check_refuses_finite_differences(h, central):
    """The statement asks for autograd; finite differences must read the field away from x,
    which is what the check refuses (with h = 1e-5 central they would pass its tolerance)."""
    with pytest.raises(exercises.ExerciseFailure, match="finite differences"):
        exercises.check_curl_2d(_finite_difference_curl(h, central))


def _divergence(field, x):
    x = x.detach().requires_grad_(True)
    v = field(x)
    (grad_v1,) = torch.autograd.grad(v[:, 0].sum(), x, retain_graph=True)
    (grad_v2,) = torch.autograd.grad(v[:, 1].sum(), x)
    return (grad_v1[:, 0] + grad_v2[:, 1]).detach()


@pytest.mark.parametrize("wrong, message", [
    (_divergence, "computes the divergence"),
    (lambda f, x: -_reference_curl(f, x), "sign is flipped"),
    (lambda f, x: torch.zeros(x.shape[0], dtype=x.dtype), "off by"),
    (lambda f, x: _reference_curl(f, x).requires_grad_(True), "detached"),
])
def test_curl_check_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_curl_2d(wrong)


def _reference_mixture_score(x, w, mu, s):
    diff = mu[None] - x[:, None]
    resp = torch.softmax(w.log() - diff.pow(2).sum(-1) / (2 * s**2), dim=1)
    return (resp[:, :, None] * diff).sum(1) / s**2


def test_mixture_check_rejects_wrong_answers():
    def naive_mixture_score(x, w, mu, s):  # exact near the modes, 0/0 far away
        dens = w * torch.exp(-((x[:, None] - mu) ** 2).sum(-1) / (2 * s**2))
        return (dens[..., None] * (mu - x[:, None])).sum(1) / dens.sum(1, keepdim=True) / s**2

    with pytest.raises(exercises.ExerciseFailure, match="far from every mode"):
        exercises.check_mixture_score(naive_mixture_score)
    with pytest.raises(exercises.ExerciseFailure, match="forgets to divide by std"):
        exercises.check_mixture_score(lambda x, w, mu, s: _reference_mixture_score(x, w, mu, s) * s**2)
    with pytest.raises(exercises.ExerciseFailure, match="divides by std, not std"):
        exercises.check_mixture_score(lambda x, w, mu, s: _reference_mixture_score(x, w, mu, s) * s)

    def in_place(x, w, mu, s):
        out = _reference_mixture_score(x, w, mu, s)
        x.zero_()
        return out

    with pytest.raises(exercises.ExerciseFailure, match="in place"):
        exercises.check_mixture_score(in_place)


def test_mixture_check_far_points_are_a_thousand_stds_from_every_mode():
    """The statement promises points 1000 standard deviations from every mode; the check's far
    batches (B = 2) are recorded here and measured against the means it passes."""
    distances = []

    def recording(x, w, mu, s):
        if x.shape[0] == 2:
            distances.append(float(torch.cdist(x, mu).min()) / s)
        return _reference_mixture_score(x, w, mu, s)

    exercises.check_mixture_score(recording)
    assert len(distances) == 4 and min(distances) >= 1000, distances


@pytest.mark.parametrize("check", [exercises.check_gaussian_score, exercises.check_curl_2d,
                                   exercises.check_mixture_score])
def test_an_untouched_stub_is_not_implemented_yet(check):
    def stub(*args):
        raise NotImplementedError

    with pytest.raises(exercises.ExerciseFailure, match="stub is not implemented yet"):
        check(stub)


def test_student_edition_strips_solutions_and_keeps_checks(tmp_path):
    written = student_version.write_student_edition(ROOT / "book", tmp_path)
    [chapter_1] = [p for p in written if p.name == CHAPTER_1.name]
    text = chapter_1.read_text()
    assert "BEGIN SOLUTION" not in text and "torch.linalg.solve(cov" not in text
    assert "solution-start" not in text and "solution-end" not in text
    assert text.count("raise NotImplementedError") == 3
    assert "exercises.check_gaussian_score" in text and "**Exercise 1** (The score of a Gaussian)" in text
    cells = json.loads(text)["cells"]
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code")
    stub = _solutions_from_student(chapter_1)
    with pytest.raises(exercises.ExerciseFailure, match="gaussian_score is not implemented yet"):
        exercises.check_gaussian_score(stub["gaussian_score"])


def test_a_failing_check_shows_its_message_without_a_traceback():
    """IPython renders `_render_traceback_` in place of the traceback; the cell still fails. The
    forgotten transposes get a diagnosis (the fixed case has B = D), and an exception raised in
    the student's code becomes one sentence naming it."""
    def forgot_the_transposes(x, mean, cov):
        return -torch.linalg.solve(cov, x - mean)

    def mismatched_shapes(x, mean, cov):
        return -torch.linalg.solve(cov, torch.cat([x, x]) - mean)

    for answer, expected in [(forgot_the_transposes, "gaussian_score is wrong for a fixed 2-D Gaussian: solve"),
                             (mismatched_shapes, "mismatched_shapes raised RuntimeError")]:
        with pytest.raises(exercises.ExerciseFailure) as info:
            exercises.check_gaussian_score(answer)
        message = info.value._render_traceback_()
        assert len(message) == 1 and expected in message[0] and "\n" not in message[0]
        assert "Traceback" not in message[0]


def _solutions_from_student(path):
    namespace = {"torch": torch}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and "YOUR CODE HERE" in cell.source:
            exec(cell.source, namespace)
    return namespace


def test_unbalanced_markers_are_errors():
    with pytest.raises(ValueError, match="without a matching END"):
        student_version.strip_source("def f():\n    ### BEGIN SOLUTION\n    return 1\n")
    with pytest.raises(ValueError, match="without a matching BEGIN"):
        student_version.strip_source("x = 1\n### END SOLUTION\n")
    assert student_version.strip_source("    ### BEGIN SOLUTION\n    y = 2\n    ### END SOLUTION") == \
        "    # YOUR CODE HERE\n    raise NotImplementedError"
