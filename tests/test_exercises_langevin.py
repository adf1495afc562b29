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
    exercises.check_ula_stationary_variance(solutions["ula_stationary_variance"])
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


@pytest.mark.parametrize("wrong, message", [
    (lambda s2, eta: s2 / (1 - eta / (2 * s2)), "d = eta / 2"),
    (lambda s2, eta: s2 + 0 * eta, "exactly s^2"),
    (lambda s2, eta: s2 + eta / 4, "first order"),
    (lambda s2, eta: s2 / (1 + eta / (4 * s2)), "wrong sign"),
    (lambda s2, eta: eta / (eta / s2 - eta / (4 * s2**2)), "eta squared"),
    (lambda s2, eta: eta / (eta / (2 * s2)), "1 - a^2"),
    (lambda s2, eta: eta / (1 - (1 - eta / s2) ** 2), "drops the 1/2"),
    (lambda s2, eta: 2 * eta / (1 - (1 - eta / (2 * s2)) ** 2), "not 2 eta"),
    (lambda s2, eta: (s2 / (1 - eta / (4 * s2))).float(), "keep the inputs' dtype"),
])
def test_ula_stationary_variance_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=re.escape(message)):
        exercises.check_ula_stationary_variance(wrong)


def test_ula_stationary_variance_is_checked_up_to_the_edge_of_stability():
    """Right for small steps only (a second-order expansion): caught near eta = 4 s^2."""
    def second_order(s2, eta):
        r = eta / (4 * s2)
        return s2 * (1 + r + r**2)

    with pytest.raises(exercises.ExerciseFailure, match="off by"):
        exercises.check_ula_stationary_variance(second_order)


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
                        ("ula_stationary_variance", exercises.check_ula_stationary_variance),
                        ("mala_accept_prob", exercises.check_mala_accept_prob)):
        with pytest.raises(exercises.ExerciseFailure, match=f"{name} is not implemented yet"):
            check(stubs[name])


def test_an_error_inside_the_answer_is_one_sentence():
    with pytest.raises(exercises.ExerciseFailure, match="raised TypeError"):
        exercises.check_mala_accept_prob(lambda x, y, lp, s, eta: lp(x, y))
