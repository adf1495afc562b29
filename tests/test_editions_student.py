"""The student edition of every chapter: solutions gone, stubs in their place, checks kept,
markdown for plain Jupyter, and every check failing at its stub with its own message."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.editions import myst
from course_lib.editions.exercises import BEGIN, STUB, _python, check_calls, read_exercises
from course_lib.editions.nosolutions import find_solutions
from course_lib.editions.project import Book
from course_lib.editions.student import student_notebook, write_edition

ROOT = Path(__file__).resolve().parents[1]
BOOK = Book.at(ROOT)
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    write_edition(student_notebook, BOOK, out)
    return out


def _pairs(edition):
    return [(path, nbformat.read(edition / "book" / path.name, as_version=4)) for path in CHAPTERS]


def test_no_solution_code_or_text_remains(edition):
    assert find_solutions(BOOK, edition) == []
    for path in (edition / "book").glob("*.ipynb"):
        assert "BEGIN SOLUTION" not in path.read_text() and "solution-start" not in path.read_text()


def test_markdown_is_plain_and_outputs_are_cleared(edition):
    for source, nb in _pairs(edition):
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                assert myst.leftovers(BOOK, cell.source) == [], f"{source.name}: {cell.source[:200]}"
            else:
                assert cell.outputs == [] and cell.execution_count is None


def test_every_other_code_cell_is_the_chapters_own(edition):
    """Up to its exercises the student edition runs exactly the code nbval runs for the chapter:
    the same code cells in the same order, except the bootstrap (which names the repository)
    and the solution cells (stubbed)."""
    for source, nb in _pairs(edition):
        chapter = nbformat.read(source, as_version=4)
        solutions = {e.solution for e in read_exercises(BOOK, source, chapter)}
        original = [c.source for i, c in enumerate(chapter.cells[1:], 1)
                    if c.cell_type == "code" and i not in solutions]
        student = [c.source for c in nb.cells[1:] if c.cell_type == "code" and STUB[1] not in c.source]
        assert student == original, source.name
        assert BOOK.install_requirement in nb.cells[0].source


def test_each_exercise_keeps_statement_stub_and_check(edition):
    for source, nb in _pairs(edition):
        exercises = read_exercises(BOOK, source)
        stubs = [c for c in nb.cells if c.cell_type == "code" and STUB[1] in c.source]
        checks = [call for c in nb.cells if c.cell_type == "code" for call in check_calls(c.source)]
        assert len(stubs) == len(exercises) and checks == [(e.check_name, e.function) for e in exercises]
        assert nb.metadata["course"]["chapter"] == BOOK.docname(source)
        assert [x["function"] for x in nb.metadata["course"]["exercises"]] == [e.function for e in exercises]


def _import_cells(nb):
    """The chapter's import statements as one cell (what the exercises' code may use)."""
    lines = []
    for cell in nb.cells[1:]:
        if cell.cell_type == "code" and BEGIN not in cell.source and STUB[1] not in cell.source:
            tree = ast.parse(_python(cell.source))
            lines += [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return "\n".join(dict.fromkeys(lines))


def test_in_a_kernel_each_check_fails_at_its_stub_with_its_message(edition):
    """The exercise sections of every chapter's student edition, run in one Jupyter kernel
    after the chapter's imports: the stubs run, and each check cell fails with
    ExerciseFailure "<function> is not implemented yet" (the full chapters run in the slow
    test below)."""
    from nbclient import NotebookClient

    cells, expected = [], []
    for source, nb in _pairs(edition):
        cells.append(nbformat.v4.new_code_cell(_import_cells(nb)))
        expected.append(None)
        start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "**Exercise" in c.source)
        for cell in nb.cells[start:]:
            if cell.cell_type == "code":
                cells.append(nbformat.v4.new_code_cell(cell.source))
                calls = check_calls(cell.source)
                expected.append(calls[0][1] if calls else None)
    run = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(run, timeout=120, allow_errors=True, kernel_name="python3").execute()
    for cell, function in zip(run.cells, expected):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if function is None:
            assert not errors, (cell.source, errors)
        else:
            assert len(errors) == 1 and errors[0].ename == "ExerciseFailure", cell.source
            assert f"{function} is not implemented yet" in errors[0].evalue


def test_the_command_writes_every_chapter(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "course_lib.cli", "student", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "book").glob("*.ipynb")) == [p.name for p in CHAPTERS]


@pytest.mark.slow
def test_student_edition_runs_under_nbval_up_to_its_exercises(edition, tmp_path):
    """Every chapter's student edition under nbval, whole: the check cells are tagged
    `raises-exception` in this copy, so nbval passes if and only if every other cell runs."""
    for path in (edition / "book").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and check_calls(cell.source):
                cell.metadata.setdefault("tags", []).append("raises-exception")
        nbformat.write(nb, tmp_path / path.name)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "-o", "addopts=", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert json.dumps(nb.metadata["course"])  # written by the edition
