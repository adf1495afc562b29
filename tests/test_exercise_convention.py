"""Every exercise of every chapter follows the book's one convention, its reference solution
passes its check, and its stub fails the check with the check's own message.

Chapters are found under book/, so a new chapter is covered without touching this file."""

import ast
import contextlib
import io
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib import exercises as library
from course_lib.editions import bootstrap
from course_lib.editions.exercises import (BEGIN, ConventionError, _python, read_exercises,
                                           strip_source)
from course_lib.editions.project import Book

ROOT = Path(__file__).resolve().parents[1]
BOOK = Book.at(ROOT)
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def _exercises(path):
    try:
        return read_exercises(BOOK, path)
    except ConventionError as err:
        pytest.fail(f"{path.name} does not follow the exercise convention (see book/instructors.md):\n{err}")



def _collect():
    found = []
    for path in CHAPTERS:
        try:
            found += [(path, e) for e in read_exercises(BOOK, path)]
        except ConventionError:
            pass  # reported by test_every_chapter_follows_the_convention
    return found


EXERCISES = _collect()
IDS = [f"{p.stem[:2]}-{e.label}" for p, e in EXERCISES]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_follows_the_convention(path):
    found = _exercises(path)
    assert len(found) >= 3, f"{path.name}: every chapter has at least three exercises, found {len(found)}"
    checks = [e.check_name for e in found]
    assert len(set(checks)) == len(checks), f"{path.name}: one check per exercise, got {checks}"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_first_cell_is_the_bootstrap_cell(path):
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "code" and first.metadata.get("tags") == ["remove-cell"] \
        and first.source == bootstrap.SOURCE, (
            f"{path.name}: the first cell must be chapter 1's bootstrap cell, tagged remove-cell, "
            "byte for byte (course_lib.editions.bootstrap.SOURCE); it names no repository, "
            "so the URL stays in _config.yml alone")


def _imports(nb) -> dict:
    """A namespace holding every import of the chapter (what a solution may use)."""
    namespace = {}
    for cell in nb.cells[1:]:
        if cell.cell_type != "code" or BEGIN in cell.source:
            continue
        tree = ast.parse(_python(cell.source))
        nodes = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(body=nodes, type_ignores=[]), "<imports>", "exec"), namespace)
    return namespace


def _function(path, exercise, source):
    namespace = _imports(nbformat.read(path, as_version=4))
    exec(source, namespace)
    return namespace[exercise.function]


def _run(check, function):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        check(function)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("path, exercise", EXERCISES, ids=IDS)
def test_reference_solution_passes_with_one_correct_line(path, exercise):
    nb = nbformat.read(path, as_version=4)
    reference = _function(path, exercise, nb.cells[exercise.solution].source)
    try:
        lines = _run(getattr(library, exercise.check_name), reference)
    except library.ExerciseFailure as err:
        pytest.fail(f"{path.name} {exercise.label}: the reference solution fails its check: {err}. "
                    "A solution may use only the chapter's imports and its arguments")
    assert len(lines) == 1 and lines[0].startswith("Correct:"), lines


@pytest.mark.parametrize("path, exercise", EXERCISES, ids=IDS)
def test_stub_fails_with_the_checks_own_message(path, exercise):
    nb = nbformat.read(path, as_version=4)
    stub = _function(path, exercise, strip_source(nb.cells[exercise.solution].source))
    with pytest.raises(library.ExerciseFailure) as info:
        _run(getattr(library, exercise.check_name), stub)
    message = info.value._render_traceback_()
    assert len(message) == 1 and "\n" not in message[0]
    assert f"{exercise.function} is not implemented yet" in message[0]


def _returns_none(*args, **kwargs):
    return None


def _returns_text(*args, **kwargs):
    return "forty-two"


def _raises(*args, **kwargs):
    raise ZeroDivisionError("boom")


@pytest.mark.parametrize("answer, says", [(_returns_none, None), (_returns_text, None),
                                          (_raises, "ZeroDivisionError: boom")],
                         ids=["None", "a string", "raises"])
@pytest.mark.parametrize("path, exercise", EXERCISES, ids=IDS)
def test_any_wrong_answer_gets_one_sentence_never_a_traceback(path, exercise, answer, says):
    out = io.StringIO()
    with pytest.raises(library.ExerciseFailure) as info, contextlib.redirect_stdout(out):
        getattr(library, exercise.check_name)(answer)
    [message] = info.value._render_traceback_()
    assert "\n" not in message and "Traceback" not in message and "Correct:" not in out.getvalue()
    assert says is None or says in message, message


def test_a_drifting_chapter_is_told_what_to_fix(tmp_path):
    nb = nbformat.read(CHAPTERS[0], as_version=4)
    first = read_exercises(BOOK, CHAPTERS[0], nb)[0]
    broken = nbformat.from_dict(nb)
    del broken.cells[first.solution_end]  # the {solution-end} cell is missing
    with pytest.raises(ConventionError, match="must be followed by a cell holding only {solution-end}"):
        read_exercises(BOOK, CHAPTERS[0], broken)
    broken = nbformat.from_dict(nb)
    broken.cells[first.solution_start].source = broken.cells[first.solution_start].source.replace(
        ":class: dropdown\n", "")
    with pytest.raises(ConventionError, match="must be collapsed: add ':class: dropdown'"):
        read_exercises(BOOK, CHAPTERS[0], broken)
    broken = nbformat.from_dict(nb)
    broken.cells[first.check].source = f"print({first.function}(1, 2, 3))"
    with pytest.raises(ConventionError, match="must make one course_lib.exercises check call"):
        read_exercises(BOOK, CHAPTERS[0], broken)
    broken = nbformat.from_dict(nb)
    broken.cells[first.solution].source = broken.cells[first.solution].source.replace(BEGIN, "")
    with pytest.raises(ConventionError, match="BEGIN SOLUTION"):
        read_exercises(BOOK, CHAPTERS[0], broken)


def test_the_checks_hold_their_messages_on_other_devices():
    """A check compares devices too (checking.check_tensor): an answer moved off the inputs'
    device is named, so a student on a GPU gets a sentence, not a device error later."""
    expected = torch.zeros(2, dtype=torch.float64)
    got = torch.zeros(2, dtype=torch.float64, device="meta")
    with pytest.raises(library.ExerciseFailure, match="keep it on the inputs' device"):
        library.checking.check_tensor("f", got, expected)
