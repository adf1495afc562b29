"""Chapter 6's exercise checks: the reference solutions in the notebook pass, the typical wrong
answers are rejected with a message naming the mistake, and the untouched stubs are reported as
not implemented."""

import math
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib import dpm_solver, exercises, student_version
from course_lib.utils import append_dims

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "06_probability_flow.ipynb"


def _solutions():
    """name -> function for every exercise cell of the chapter (cells with solution markers)."""
    namespace = {"torch": torch, "math": math, "dpm_solver": dpm_solver, "append_dims": append_dims}
    for cell in nbformat.read(CHAPTER, as_version=4).cells:
        if cell.cell_type == "code" and student_version.BEGIN in cell.source:
            exec(cell.source, namespace)
    return namespace


def test_reference_solutions_pass(capsys):
    ns = _solutions()
    exercises.check_pf_ode_drift(ns["pf_ode_drift"])
    exercises.check_dpm_solver_1_step(ns["dpm_solver_1_step"])
    exercises.check_measured_order(ns["measured_order"])
    assert capsys.readouterr().out.count("Correct:") == 3


def _drift(scale=0.5, sign=-1.0, square=True, with_f=True):
    def pf_ode_drift(sde, score_fn, x, t):
        g = append_dims(sde.diffusion(t), x.ndim)
        f = sde.drift(x, t) if with_f else 0.0
        return f + sign * scale * (g**2 if square else g) * score_fn(x, t)
    return pf_ode_drift


@pytest.mark.parametrize("wrong, message", [
    (_drift(scale=1.0), "reverse SDE's drift"),
    (_drift(sign=1.0), "sign of the score term"),
    (_drift(square=False), "g instead of g"),
    (_drift(with_f=False), "forgets the forward drift"),
])
def test_pf_ode_drift_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_pf_ode_drift(wrong)


def test_pf_ode_drift_rejects_broadcasting_that_only_works_for_points():
    def points_only(sde, score_fn, x, t):  # (B, 1) broadcasting: wrong shape for images
        return sde.drift(x, t) - 0.5 * sde.diffusion(t)[:, None] ** 2 * score_fn(x, t)
    with pytest.raises(exercises.ExerciseFailure, match="raised RuntimeError|shape"):
        exercises.check_pf_ode_drift(points_only)


def _step(lin="sigma", expo=-1.0, sign=-1.0, coef="alpha"):
    def dpm_solver_1_step(x, x0, s, t):
        h = t.lam - s.lam
        linear = t.sigma / s.sigma if lin == "sigma" else t.alpha / s.alpha
        c = t.alpha if coef == "alpha" else t.sigma
        return linear * x + sign * c * math.expm1(expo * h) * x0
    return dpm_solver_1_step


@pytest.mark.parametrize("wrong, message", [
    (_step(sign=1.0), "sign is flipped"),
    (_step(expo=1.0), r"e\^\{h\} - 1"),
    (_step(lin="alpha"), "linear factor alpha_t / alpha_s"),
    (_step(expo=-2.0), "full log-SNR"),
    (_step(coef="sigma"), "sigma_t instead of alpha_t"),
])
def test_dpm_solver_1_step_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_dpm_solver_1_step(wrong)


def _order(log=math.log2, power=0.5, invert=False, factor=2):
    def measured_order(sampler, score_fn, sde, x, x_ref, n):
        errs = []
        for m in (n, factor * n):
            out = sampler(score_fn, sde, x, dpm_solver.logsnr_grid(sde, m, dtype=x.dtype))
            errs.append(float((out - x_ref).pow(2).sum(1).mean() ** power))
        ratio = errs[1] / errs[0] if invert else errs[0] / errs[1]
        return log(ratio)
    return measured_order


@pytest.mark.parametrize("wrong, message", [
    (_order(log=math.log), "natural log"),
    (_order(invert=True), "upside down"),
    (_order(power=1.0), "mean squared errors"),
    (_order(factor=1), "same grid"),
    (_order(factor=3), "returned"),
])
def test_measured_order_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_measured_order(wrong)


def test_measured_order_accepts_a_tensor_and_refuses_a_non_number():
    right = _order()
    exercises.check_measured_order(lambda *args: torch.tensor(right(*args)))
    with pytest.raises(exercises.ExerciseFailure, match="finite float"):
        exercises.check_measured_order(lambda *args: "two")


@pytest.mark.parametrize("check", [exercises.check_pf_ode_drift, exercises.check_dpm_solver_1_step,
                                   exercises.check_measured_order])
def test_stubs_are_not_implemented_yet(check):
    def stub(*args):
        raise NotImplementedError
    with pytest.raises(exercises.ExerciseFailure, match="not implemented yet"):
        check(stub)
