"""Chapter 4: the exercise checks accept the reference solutions and name the typical mistakes,
and the chapter's weights cell explains a missing or damaged weights file instead of failing."""

import contextlib
import io
import math
import types
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib import exercises, recipes, runtime, student_version
from course_lib.utils import append_dims

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_4 = ROOT / "book" / "04_ncsn.ipynb"
F64 = torch.float64


def _namespace(marker: str) -> dict:
    """name -> function for the chapter's code cells that contain `marker`."""
    namespace = {"torch": torch, "append_dims": append_dims}
    for cell in nbformat.read(CHAPTER_4, as_version=4).cells:
        if cell.cell_type == "code" and marker in cell.source:
            exec(cell.source, namespace)
    return namespace


@pytest.fixture(scope="module")
def solutions():
    return _namespace(student_version.BEGIN)


def test_reference_solutions_pass(solutions, capsys):
    exercises.check_geometric_ladder(solutions["geometric_ladder"])
    exercises.check_weighted_dsm_loss(solutions["weighted_dsm_loss"])
    exercises.check_annealed_level(solutions["annealed_level"])
    exercises.check_tweedie_denoise(solutions["tweedie_denoise"])
    assert capsys.readouterr().out.count("Correct:") == 4


# -- the ladder ------------------------------------------------------------------------------------
def _ladder(kind):
    def ladder(sigma_max, sigma_min, n):
        if kind == "linear":
            return torch.linspace(sigma_max, sigma_min, n, dtype=F64)
        if kind == "increasing":
            return torch.logspace(math.log10(sigma_min), math.log10(sigma_max), n, dtype=F64)
        if kind == "ratio over L":
            return sigma_max * ((sigma_max / sigma_min) ** (1 / n)) ** -torch.arange(n, dtype=F64)
        if kind == "L - 1 levels":
            return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n - 1, dtype=F64)
        if kind == "float32":
            return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n)
        raise NotImplementedError

    return ladder


@pytest.mark.parametrize("kind, message", [
    ("linear", "evenly spaced in sigma"),
    ("increasing", "the levels increase"),
    ("ratio over L", r"1 / \(n_levels - 1\)"),
    ("L - 1 levels", "both ends included"),
    ("float32", r"returned torch.float32 .*return float64"),
    ("stub", "geometric_ladder is not implemented yet"),
])
def test_ladder_mistakes_are_named(kind, message):
    ladder = _ladder(kind)
    ladder.__name__ = "geometric_ladder"
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_geometric_ladder(ladder)


# -- the weighted loss -----------------------------------------------------------------------------
def _loss(power=2.0, sign=-1.0, clean=False, half=0.5, reduce="mean", stub=False):
    def weighted_dsm_loss(score_fn, x, sigmas, levels, z):
        if stub:
            raise NotImplementedError
        sigma = sigmas[levels]
        s = append_dims(sigma, x.ndim)
        residual = score_fn(x if clean else x + s * z, sigma) - sign * z / s
        if reduce == "elements":  # F.mse_loss's mean over every element
            return (half * append_dims(sigma, x.ndim) ** power * residual.square()).mean()
        per_sample = half * sigma**power * residual.flatten(1).square().sum(1)
        return per_sample.mean() if reduce == "mean" else per_sample.sum()

    return weighted_dsm_loss


@pytest.mark.parametrize("wrong, message", [
    (dict(power=0.0), "weighting lambda"),
    (dict(power=1.0), "weights by sigma, not"),
    (dict(power=-2.0), "weights by 1 / sigma"),
    (dict(sign=1.0), "wrong sign"),
    (dict(clean=True), "at the clean x"),
    (dict(half=1.0), "factor 1/2"),
    (dict(reduce="sum"), "sums over the batch"),
    (dict(reduce="elements"), r"averages over each example's coordinates too \(a mean over all elements, as"),
    (dict(reduce="elements", half=1.0), "coordinates too .* and the factor 1/2 is missing"),
    (dict(stub=True), "not implemented yet"),
])
def test_loss_mistakes_are_named(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_weighted_dsm_loss(_loss(**wrong))


def test_a_float32_sigma_is_named():
    def annealed_level(score_fn, x, sigma, sigma_min, eps, z):
        sigma_b = torch.full((x.shape[0],), sigma)  # float32, x is float64
        return x + eps * score_fn(x, sigma_b)

    with pytest.raises(exercises.ExerciseFailure, match="make the sigma tensor x's dtype"):
        exercises.check_annealed_level(annealed_level)


def test_loss_with_a_scalar_sigma_is_refused_with_the_shape():
    def scalar_sigma(score_fn, x, sigmas, levels, z):
        return score_fn(x, float(sigmas[0])).sum()

    with pytest.raises(exercises.ExerciseFailure, match=r"needs sigma as a tensor of shape \(B,\)"):
        exercises.check_weighted_dsm_loss(scalar_sigma)


# -- one annealed level ----------------------------------------------------------------------------
def _level(power=2.0, drift=0.5, noise=0.5, noise_scale=1.0, at_min=False, frozen=False, in_place=False):
    def annealed_level(score_fn, x, sigma, sigma_min, eps, z):
        alpha = eps * (sigma / sigma_min) ** power
        sigma_b = torch.full((x.shape[0],), sigma_min if at_min else sigma, dtype=x.dtype)
        s = score_fn(x, sigma_b)
        for z_t in z:
            if not frozen:
                s = score_fn(x, sigma_b)
            if in_place:
                x += drift * alpha * s + noise_scale * alpha**noise * z_t
            else:
                x = x + drift * alpha * s + noise_scale * alpha**noise * z_t
        return x

    return annealed_level


@pytest.mark.parametrize("wrong, message", [
    (dict(power=0.0), "the step is eps;"),
    (dict(power=1.0), "scales as sigma / sigma_min"),
    (dict(drift=1.0), "lacks the factor 1/2"),
    (dict(noise=1.0), "the noise is alpha z"),
    (dict(noise_scale=2**0.5), r"the noise is sqrt\(2 alpha\) z"),
    (dict(drift=1.0, noise_scale=2**0.5), "the other convention"),
    (dict(frozen=True), "evaluated once"),
    (dict(at_min=True), "evaluated at sigma_min"),
    (dict(in_place=True), "must not modify x or z in place"),
])
def test_level_mistakes_are_named(wrong, message):
    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_annealed_level(_level(**wrong))


# -- Tweedie -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrong, message", [
    (lambda x, s, sig: x + sig * s, "multiplies the score by sigma"),
    (lambda x, s, sig: x - sig**2 * s, "the sign is wrong"),
    (lambda x, s, sig: sig**2 * s, "add it to x"),
])
def test_tweedie_mistakes_are_named(wrong, message):
    def tweedie_denoise(score_fn, x, sigma):
        return wrong(x, score_fn(x, torch.full((x.shape[0],), sigma, dtype=x.dtype)), sigma)

    with pytest.raises(exercises.ExerciseFailure, match=message):
        exercises.check_tweedie_denoise(tweedie_denoise)


def test_student_edition_stubs_fail_as_not_implemented():
    chapter = student_version.student_notebook(nbformat.read(CHAPTER_4, as_version=4),
                                               docname="book/04_ncsn")
    text = nbformat.writes(chapter)
    assert "BEGIN SOLUTION" not in text and "solution-start" not in text
    assert text.count("raise NotImplementedError") == 4
    namespace = {"torch": torch, "append_dims": append_dims}
    for cell in chapter.cells:
        if cell.cell_type == "code" and "YOUR CODE HERE" in cell.source:
            exec(cell.source, namespace)
    checks = {"geometric_ladder": exercises.check_geometric_ladder,
              "weighted_dsm_loss": exercises.check_weighted_dsm_loss,
              "annealed_level": exercises.check_annealed_level,
              "tweedie_denoise": exercises.check_tweedie_denoise}
    for name, check in checks.items():
        with pytest.raises(exercises.ExerciseFailure, match=f"{name} is not implemented yet"):
            check(namespace[name])


# -- the chapter's weights cell --------------------------------------------------------------------
def _run_weights_cell(monkeypatch, weights_dir) -> tuple[dict, str]:
    """Execute the chapter's cell that loads the shipped digits weights, with the weights folder
    pointed at `weights_dir`; returns its namespace and what it printed."""
    [cell] = [c for c in nbformat.read(CHAPTER_4, as_version=4).cells
              if c.cell_type == "code" and "recipes.load_weights(" in c.source]
    monkeypatch.setattr(recipes, "WEIGHTS_DIR", Path(weights_dir))
    recipe = recipes.DIGITS_NCSN
    live = types.SimpleNamespace(model=recipe.model(), ema_model=None)
    namespace = {"recipes": recipes, "recipe": recipe, "profile": runtime.get_profile("ci"),
                 "device": torch.device("cpu"), "state": live}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(cell.source, namespace)
    return namespace, out.getvalue()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_weights_cell_explains_a_missing_or_corrupt_file(monkeypatch, tmp_path, damage):
    if damage == "corrupt":
        (tmp_path / "digits-ncsn.pt").write_bytes(b"half a file")
    namespace, printed = _run_weights_cell(monkeypatch, tmp_path)
    assert "python -m course_lib.cli weights digits-ncsn" in printed
    assert "quality checks are skipped" in printed
    assert namespace["source"] == "live" and namespace["check_quality"] is False
    assert namespace["model"] is namespace["state"].model

