"""Chapter 2's exercise checks accept the reference solutions, name the typical mistakes,
and tell an untouched stub that it is not implemented yet."""

import re
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib import exercises, student_version

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_2 = ROOT / "book" / "02_langevin_dynamics.ipynb"


def _cells(path, marker):
    """name -> function for the chapter's code cells containing `marker`."""
    namespace = {"torch": torch}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and marker in cell.source:
            exec(cell.source, namespace)
    return namespace


@pytest.fixture(scope="module")
def solutions():
    return _cells(CHAPTER_2, student_version.BEGIN)


def test_reference_solutions_pass(solutions, capsys):
    exercises.check_langevin_step(solutions["langevin_step"])
    exercises.check_ula_stationary_covariance(solutions["ula_stationary_covariance"])
    exercises.check_mala_accept_prob(solutions["mala_accept_prob"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.startswith("Correct:") for line in lines)


@pytest.mark.parametrize("wrong, message", [
    (lambda x, s, eta, z: x - 0.5 * eta * s + eta**0.5 * z, "wrong sign"),
    (lambda x, s, eta, z: x + eta * s + eta**0.5 * z, "lacks the factor 1/2"),
    (lambda x, s, eta, z: x + eta * s + (2 * eta) ** 0.5 * z, "other convention"),
    (lambda x, s, eta, z: x + 0.5 * eta * s + (2 * eta) ** 0.5 * z, "noise is sqrt(2 eta) z"),
    (lambda x, s, eta, z: x + 0.5 * eta * s + eta * z, "noise is eta z"),
    (lambda x, s, eta, z: x + 0.5 * eta * s, "gradient ascent"),
    (lambda x, s, eta, z: x + 0.5 * eta * s - eta**0.5 * z, "noise is subtracted"),
    (lambda x, s, eta, z: x + 0.5 * eta * s + eta**0.5 * z + 1e-3, "off by"),
    (lambda x, s, eta, z: (x + 0.5 * eta * s + eta**0.5 * z).double(), "keep the inputs' dtype"),
    (lambda x, s, eta, z: (x + 0.5 * eta * s + eta**0.5 * z)[:1], "returned shape"),
])
def test_langevin_step_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=re.escape(message)):
        exercises.check_langevin_step(wrong)


def test_langevin_step_must_not_update_in_place():
    def in_place(x, s, eta, z):
        return x.add_(0.5 * eta * s + eta**0.5 * z)

    with pytest.raises(exercises.ExerciseFailure, match="in place"):
        exercises.check_langevin_step(in_place)


def _reference_covariance(cov, eta):
    eye = torch.eye(len(cov), dtype=cov.dtype)
    a = eye - 0.5 * eta * torch.linalg.inv(cov)
    return eta * torch.linalg.inv(eye - a @ a)


def _fixed_point(a, noise):
    return noise * torch.linalg.inv(torch.eye(len(a), dtype=a.dtype) - a @ a)


def _eye(cov):
    return torch.eye(len(cov), dtype=cov.dtype)


@pytest.mark.parametrize("correct", [
    _reference_covariance,
    lambda c, eta: torch.linalg.solve(_eye(c) - 0.25 * eta * torch.linalg.inv(c), c),  # Sigma (I - ..)^-1
    lambda c, eta: torch.linalg.inv(torch.linalg.inv(c) - 0.25 * eta * torch.linalg.matrix_power(
        torch.linalg.inv(c), 2)),  # (Sigma^-1 - eta Sigma^-2 / 4)^-1
    lambda c, eta: (lambda lam, q: q @ torch.diag(lam / (1 - eta / (4 * lam))) @ q.T)(*torch.linalg.eigh(c)),
], ids=["eta (I - A^2)^-1", "solve", "inverse of the precision", "eigenvectors"])
def test_ula_stationary_covariance_accepts_every_equivalent_formula(correct, capsys):
    exercises.check_ula_stationary_covariance(correct)
    assert capsys.readouterr().out.startswith("Correct:")


@pytest.mark.parametrize("wrong, message", [
    (lambda c, eta: c / (1 - eta / (4 * c)), "each entry of Sigma"),
    (lambda c, eta: torch.diag(torch.diagonal(c) / (1 - eta / (4 * torch.diagonal(c)))), "diagonal only"),
    (lambda c, eta: c @ torch.linalg.inv(_eye(c) - 0.5 * eta * torch.linalg.inv(c)), "d = eta / 2"),
    (lambda c, eta: c.clone(), "exactly Sigma"),
    (lambda c, eta: c + 0.25 * eta * _eye(c), "first order"),
    (lambda c, eta: torch.linalg.solve(_eye(c) + 0.25 * eta * torch.linalg.inv(c), c), "wrong sign"),
    (lambda c, eta: _fixed_point(_eye(c) - 0.5 * eta * c, eta), "not -Sigma x"),
    (lambda c, eta: _fixed_point(_eye(c) - 0.5 * eta / c, eta), "not 1 / Sigma entry by entry"),
    (lambda c, eta: eta * torch.linalg.inv(0.5 * eta * torch.linalg.inv(c)), "I - A^2"),
    (lambda c, eta: _fixed_point(_eye(c) - eta * torch.linalg.inv(c), eta), "drops the 1/2"),
    (lambda c, eta: 2 * _reference_covariance(c, eta), "not 2 eta I"),
    (lambda c, eta: _reference_covariance(c, eta).float(), "keep the inputs' dtype"),
    (lambda c, eta: _reference_covariance(c, eta)[None], "returned shape"),
    (lambda c, eta: c.mul_(1.5), "modify cov in place"),
])
def test_ula_stationary_covariance_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=re.escape(message)):
        exercises.check_ula_stationary_covariance(wrong)


def test_ula_stationary_covariance_is_checked_up_to_the_edge_of_stability():
    """An answer right only for eta < 1.9 lambda_min (where the named mistakes are checked)
    is caught by the steps between 1.9 and 3.95 lambda_min."""
    def right_for_small_steps(c, eta):
        exact = _reference_covariance(c, eta)
        return exact if eta < 1.9 * float(torch.linalg.eigvalsh(c)[0]) else 1.01 * exact

    with pytest.raises(exercises.ExerciseFailure, match="off by.*edge of stability|step_size 1.0"):
        exercises.check_ula_stationary_covariance(right_for_small_steps)


def test_ula_stationary_covariance_names_no_mistake_for_a_truncated_expansion():
    """A second-order expansion along each eigenvector is off by its remainder: a size, no
    misleading diagnosis."""
    def second_order(c, eta):
        lam, q = torch.linalg.eigh(c)
        r = eta / (4 * lam)
        return q @ torch.diag(lam * (1 + r + r**2)) @ q.T

    with pytest.raises(exercises.ExerciseFailure, match="is off by up to"):
        exercises.check_ula_stationary_covariance(second_order)


def _log_q(to, frm, score, eta, mean_factor=0.5, var=None):
    return -(to - frm - mean_factor * eta * score(frm)).square().sum(-1) / (2 * (var or eta))


@pytest.mark.parametrize("wrong, message", [
    (lambda x, y, lp, s, eta: (lp(y) - lp(x) + _log_q(x, y, s, eta) - _log_q(y, x, s, eta)).exp(),
     "cannot exceed 1"),
    (lambda x, y, lp, s, eta: (lp(y) - lp(x)).clamp(max=0).exp(), "random-walk Metropolis"),
    (lambda x, y, lp, s, eta: (lp(y) - lp(x) - _log_q(x, y, s, eta) + _log_q(y, x, s, eta)).clamp(max=0).exp(),
     "proposal ratio is upside down"),
    (lambda x, y, lp, s, eta: (lp(x) - lp(y) - _log_q(x, y, s, eta) + _log_q(y, x, s, eta)).clamp(max=0).exp(),
     "whole ratio is upside down"),
    (lambda x, y, lp, s, eta: (lp(y) - lp(x) + _log_q(x, y, s, eta, 1.0) - _log_q(y, x, s, eta, 1.0))
     .clamp(max=0).exp(), "factor 1/2"),
    (lambda x, y, lp, s, eta: (lp(y) - lp(x) + _log_q(x, y, s, eta, var=2 * eta)
                               - _log_q(y, x, s, eta, var=2 * eta)).clamp(max=0).exp(), "not 2 eta"),
    (lambda x, y, lp, s, eta: (lp(y) - lp(x) - (x - y - 0.5 * eta * s(x)).square().sum(-1) / (2 * eta)
                               - _log_q(y, x, s, eta)).clamp(max=0).exp(), "the score at y"),
    (lambda x, y, lp, s, eta: (lp(y) - lp(x) + _log_q(x, y, s, eta) - _log_q(y, x, s, eta)).clamp(max=0),
     "off by"),  # the log of the probability
])
def test_mala_accept_prob_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=re.escape(message)):
        exercises.check_mala_accept_prob(wrong)


def test_untouched_stubs_are_not_implemented_yet(tmp_path):
    written = student_version.write_student_edition(ROOT / "book", tmp_path)
    [chapter] = [p for p in written if p.name == CHAPTER_2.name]
    text = chapter.read_text()
    assert "BEGIN SOLUTION" not in text and text.count("raise NotImplementedError") == 3
    stubs = _cells(chapter, "YOUR CODE HERE")
    for name, check in (("langevin_step", exercises.check_langevin_step),
                        ("ula_stationary_covariance", exercises.check_ula_stationary_covariance),
                        ("mala_accept_prob", exercises.check_mala_accept_prob)):
        with pytest.raises(exercises.ExerciseFailure, match=f"{name} is not implemented yet"):
            check(stubs[name])


def test_an_error_inside_the_answer_is_one_sentence():
    with pytest.raises(exercises.ExerciseFailure, match="raised TypeError"):
        exercises.check_mala_accept_prob(lambda x, y, lp, s, eta: lp(x, y))
