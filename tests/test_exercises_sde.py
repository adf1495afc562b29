"""Chapter 5's exercise checks accept the reference solutions (the notebook's own and others),
name each typical mistake, and report an untouched stub as not implemented yet."""

import math
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib import exercises, student_version
from course_lib.distributions import GaussianMixture
from course_lib.utils import append_dims

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_5 = ROOT / "book" / "05_sde.ipynb"


def _solutions(path):
    """name -> function for every exercise cell of the chapter (cells with solution markers)."""
    namespace = {"torch": torch, "math": math, "append_dims": append_dims, "GaussianMixture": GaussianMixture}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and student_version.BEGIN in cell.source:
            exec(cell.source, namespace)
    return namespace


def test_reference_solutions_of_the_notebook_pass(capsys):
    ns = _solutions(CHAPTER_5)
    exercises.check_vp_kernel(ns["vp_kernel"])
    exercises.check_reverse_em_step(ns["reverse_em_step"])
    exercises.check_guided_score(ns["guided_score"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(line.startswith("Correct:") for line in out)


# -- exercise 1: the VP kernel --------------------------------------------------------------------
def _log_alpha(t, b0, b1):
    return -0.5 * b0 * t - 0.25 * (b1 - b0) * t**2


def _kernel(alpha_fn, std_fn):
    def vp_kernel(x0, t, b0, b1):
        alpha = alpha_fn(t, b0, b1)
        return append_dims(alpha, x0.ndim) * x0, std_fn(alpha)
    return vp_kernel


_right_alpha = lambda t, b0, b1: _log_alpha(t, b0, b1).exp()
_right_std = lambda a: torch.sqrt(1 - a**2)


def test_vp_kernel_accepts_the_library_and_an_expm1_solution(capsys):
    from course_lib.sde import VPSDE

    def with_library(x0, t, b0, b1):
        return VPSDE(b0, b1).marginal_prob(x0, t)

    def with_expm1(x0, t, b0, b1):
        log_alpha = _log_alpha(t, b0, b1)
        return append_dims(log_alpha.exp(), x0.ndim) * x0, torch.sqrt(-torch.expm1(2 * log_alpha))

    for solution in (with_library, with_expm1):
        exercises.check_vp_kernel(solution)
        assert capsys.readouterr().out.startswith("Correct:")


@pytest.mark.parametrize("wrong, message", [
    (_kernel(lambda t, b0, b1: (2 * _log_alpha(t, b0, b1)).exp(), _right_std), "lacks the 1/2"),
    (_kernel(lambda t, b0, b1: (-0.5 * (b0 * t + (b1 - b0) * t**2)).exp(), _right_std),
     "1/2 of the t\\^2 term is missing"),
    (_kernel(lambda t, b0, b1: (-0.5 * (b0 + (b1 - b0) * t) * t).exp(), _right_std),  # beta(t) t
     "1/2 of the t\\^2 term is missing"),
    (_kernel(_right_alpha, lambda a: 1 - a**2), "square root of the variance"),
    (_kernel(_right_alpha, lambda a: torch.sqrt(1 - a)), "not 1 - alpha\\(t\\)"),
    (lambda x0, t, b0, b1: (x0.clone(), _right_std(_right_alpha(t, b0, b1))), "the mean shrinks"),
    (lambda x0, t, b0, b1: _kernel(_right_alpha, _right_std)(x0, t, b0, b1)[0], "must return a tuple"),
    (lambda x0, t, b0, b1: tuple(v.double() for v in _kernel(_right_alpha, _right_std)(x0, t, b0, b1)),
     "keep the inputs' dtype"),
    (lambda x0, t, b0, b1: (_kernel(_right_alpha, _right_std)(x0, t, b0, b1)[0],
                            append_dims(_right_std(_right_alpha(t, b0, b1)), x0.ndim)), "returned shape"),
])
def test_vp_kernel_check_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_vp_kernel(wrong)


def test_vp_kernel_check_refuses_broadcasting_written_for_points_only():
    """alpha[:, None] works for (B, D) points but not for images: the check says which case."""
    def points_only(x0, t, b0, b1):
        alpha = _right_alpha(t, b0, b1)
        return alpha[:, None] * x0, _right_std(alpha)

    with pytest.raises(exercises.ExerciseFailure, match="raised RuntimeError|shape"):
        exercises.check_vp_kernel(points_only)


# -- exercise 2: one reverse Euler-Maruyama step ------------------------------------------------
def _em(drift_sign=-1.0, score_power=2, score_factor=1.0, noise_power=0.5, noise=True, with_f=True):
    def reverse_em_step(sde, score_fn, x, t, dt, z):
        g = append_dims(sde.diffusion(t), x.ndim)
        f = sde.drift(x, t) if with_f else 0.0
        drift = f - score_factor * g**score_power * score_fn(x, t)
        return x + drift_sign * drift * dt + (g * dt**noise_power * z if noise else 0.0)
    return reverse_em_step


def test_reverse_em_step_accepts_the_reference(capsys):
    exercises.check_reverse_em_step(_em())
    assert capsys.readouterr().out.startswith("Correct:")


@pytest.mark.parametrize("wrong, message", [
    (_em(score_factor=-1.0), "score term has the wrong sign"),
    (_em(drift_sign=1.0), "time runs backward"),
    (_em(noise_power=1.0), "variance dt, not dt\\^2"),
    (_em(score_power=1), "multiplied by g\\(t\\)\\^2, not g\\(t\\)"),
    (_em(score_factor=0.5), "probability-flow ODE"),
    (_em(noise=False), "noise term g\\(t\\) sqrt\\(dt\\) z is missing"),
    (_em(with_f=False), "forward drift f\\(x, t\\) is missing"),
    (lambda sde, s, x, t, dt, z: _em()(sde, s, x, t, dt, z) + 1e-4, "off by"),
])
def test_reverse_em_step_check_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_reverse_em_step(wrong)


def test_reverse_em_step_check_catches_points_only_broadcasting():
    def points_only(sde, score_fn, x, t, dt, z):
        g = sde.diffusion(t)[:, None]
        return x - (sde.drift(x, t) - g**2 * score_fn(x, t)) * dt + g * math.sqrt(dt) * z

    with pytest.raises(exercises.ExerciseFailure, match="raised RuntimeError|images"):
        exercises.check_reverse_em_step(points_only)


# -- exercise 3: a guided score -----------------------------------------------------------------
def _component(mixture, y):
    return GaussianMixture(torch.ones(1, dtype=mixture.means.dtype), mixture.means[y:y + 1], mixture.covs[y:y + 1])


def _guided(kind):
    def guided_score(mixture, sde, x, t, y, scale):
        s, s_y = mixture.marginal_score(x, t, sde), _component(mixture, y).marginal_score(x, t, sde)
        return {
            "right": s + scale * (s_y - s),
            "clean": s + scale * (_component(mixture, y).score(x) - mixture.score(x)),
            "scale all": scale * s_y,
            "minus": s - scale * (s_y - s),
            "no prior": scale * (s_y - s),
            "class score": s + scale * s_y,
        }[kind]
    return guided_score


def _autograd_guided_score(mixture, sde, x, t, y, scale):
    """Another correct route: autograd of log p_t(y | x) = log w_y + log p_t(x | y) - log p_t(x)."""
    x = x.detach().requires_grad_(True)
    log_post = (mixture.weights[y].log() + _component(mixture, y).marginal_log_prob(x, t, sde)
                - mixture.marginal_log_prob(x, t, sde))
    (grad,) = torch.autograd.grad(log_post.sum(), x)
    return (mixture.marginal_score(x, t, sde) + scale * grad).detach()


@pytest.mark.parametrize("solution", [_guided("right"), _autograd_guided_score], ids=["closed form", "autograd"])
def test_guided_score_accepts_correct_routes(solution, capsys):
    exercises.check_guided_score(solution)
    assert capsys.readouterr().out.startswith("Correct:")


@pytest.mark.parametrize("kind, message", [
    ("clean", "noisy p_t\\(y \\| x\\)"),
    ("scale all", "scale multiplies only"),
    ("minus", "you subtracted it"),
    ("no prior", "unconditional score s_t\\(x\\) is missing"),
    ("class score", "you added the class's score"),
])
def test_guided_score_check_names_the_mistake(kind, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_guided_score(_guided(kind))


def test_guided_score_must_be_detached():
    def attached(mixture, sde, x, t, y, scale):
        return _guided("right")(mixture, sde, x, t, y, scale).requires_grad_(True)

    with pytest.raises(exercises.ExerciseFailure, match="detached"):
        exercises.check_guided_score(attached)


# -- every check ---------------------------------------------------------------------------------
@pytest.mark.parametrize("check", [exercises.check_vp_kernel, exercises.check_reverse_em_step,
                                   exercises.check_guided_score])
def test_an_untouched_stub_is_not_implemented_yet(check):
    def stub(*args):
        raise NotImplementedError

    with pytest.raises(exercises.ExerciseFailure, match="stub is not implemented yet"):
        check(stub)


def test_student_edition_of_chapter_5_fails_until_solved(tmp_path):
    written = student_version.write_student_edition(ROOT / "book", tmp_path)
    [chapter] = [p for p in written if p.name == CHAPTER_5.name]
    text = chapter.read_text()
    assert "BEGIN SOLUTION" not in text and text.count("raise NotImplementedError") == 3
    ns = {"torch": torch, "math": math, "append_dims": append_dims, "GaussianMixture": GaussianMixture}
    for cell in nbformat.read(chapter, as_version=4).cells:
        if cell.cell_type == "code" and "raise NotImplementedError" in cell.source:
            exec(cell.source, ns)
    with pytest.raises(exercises.ExerciseFailure, match="vp_kernel is not implemented yet"):
        exercises.check_vp_kernel(ns["vp_kernel"])
