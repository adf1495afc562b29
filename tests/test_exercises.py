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


def test_checks_reject_wrong_answers():
    with pytest.raises(AssertionError, match="off by"):  # the sign error students make
        exercises.check_gaussian_score(lambda x, m, c: torch.linalg.solve(c, (x - m).T).T)
    with pytest.raises(AssertionError, match="off by"):  # divergence instead of curl
        exercises.check_curl_2d(lambda f, x: torch.zeros(x.shape[0], dtype=x.dtype))

    def naive_mixture_score(x, w, mu, s):  # exact near the modes, 0/0 far away
        dens = w * torch.exp(-((x[:, None] - mu) ** 2).sum(-1) / (2 * s**2))
        return (dens[..., None] * (mu - x[:, None])).sum(1) / dens.sum(1, keepdim=True) / s**2

    with pytest.raises(AssertionError, match="far from every mode"):
        exercises.check_mixture_score(naive_mixture_score)


def test_student_edition_strips_solutions_and_keeps_checks(tmp_path):
    written = student_version.write_student_edition(ROOT / "book", tmp_path)
    [chapter_1] = [p for p in written if p.name == CHAPTER_1.name]
    text = chapter_1.read_text()
    assert "BEGIN SOLUTION" not in text and "torch.linalg.solve(cov" not in text
    assert "solution-start" not in text and "solution-end" not in text
    assert text.count("raise NotImplementedError") == 3
    assert "exercises.check_gaussian_score" in text and "{exercise}" in text
    cells = json.loads(text)["cells"]
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code")
    stub = _solutions_from_student(chapter_1)
    with pytest.raises(exercises.ExerciseFailure, match="gaussian_score is not implemented yet"):
        exercises.check_gaussian_score(stub["gaussian_score"])


def test_a_failing_check_shows_its_message_without_a_traceback():
    """IPython renders `_render_traceback_` in place of the traceback; the cell still fails."""
    def forgot_the_transposes(x, mean, cov):
        return -torch.linalg.solve(cov, x - mean)

    with pytest.raises(exercises.ExerciseFailure) as info:
        exercises.check_gaussian_score(forgot_the_transposes)
    message = info.value._render_traceback_()
    assert len(message) == 1 and "forgot_the_transposes raised RuntimeError" in message[0]
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
