"""The grader on three of chapter 1's student notebooks: fully solved, partly solved, and
adversarial (check cells deleted, a cell that sleeps forever, a check cell edited to pass, the
library's check patched, a function deleted, a cell that raises)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.editions import grading
from course_lib.editions.exercises import read_exercises, strip_source
from course_lib.editions.project import Book
from course_lib.editions.student import student_notebook

ROOT = Path(__file__).resolve().parents[1]
BOOK = Book.at(ROOT)
CHAPTER = ROOT / "book" / "01_score_function.ipynb"
SOURCE = nbformat.read(CHAPTER, as_version=4)
EXERCISES = read_exercises(BOOK, CHAPTER, SOURCE)
SOLVED = {e.function: SOURCE.cells[e.solution].source for e in EXERCISES}
STUBS = {name: strip_source(code) for name, code in SOLVED.items()}


def _student(cells_after_exercises):
    """Chapter 1's student edition cut to its first code cells and its exercises (the chapter's
    figures are not graded, and this keeps each run to seconds), with `cells_after_exercises`
    replacing its exercise section: (kind, source) pairs."""
    nb = student_notebook(SOURCE, BOOK, "book/01_score_function")
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Exercises" in c.source)
    head = [c for c in nb.cells[:start] if c.cell_type == "code"][:2]  # bootstrap, imports
    new = [nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src)
           for kind, src in cells_after_exercises]
    nb.cells = head + new
    return nb


def _write(tmp_path, name, nb):
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _check(function, check=None):
    return ("code", f"exercises.check_{check or function}({function})")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grading")
    full = _student([("code", "from course_lib import exercises")]
                    + [c for f in SOLVED for c in (("code", SOLVED[f]), _check(f))])
    partly = _student([("code", "from course_lib import exercises"),
                       ("code", SOLVED["gaussian_score"]), _check("gaussian_score"),
                       ("code", STUBS["curl_2d"]), _check("curl_2d"),
                       ("code", SOLVED["mixture_score"].replace("/ std**2", "* std**2")),
                       _check("mixture_score")])
    adversarial = _student([
        ("code", "from course_lib import exercises"),
        ("code", SOLVED["gaussian_score"]),  # solved, and its check cell deleted
        ("code", "import time\ntime.sleep(10**6)  # never ends"),
        ("code", STUBS["curl_2d"]),
        ("code", 'print("Correct: curl_2d is right")  # the check cell, edited to pass'),
        ("code", "raise ValueError('a cell that raises')"),
        ("code", "import course_lib.exercises as e\n"
                 "e.check_mixture_score = lambda f: print('Correct: patched')\n"
                 "exercises.check_curl_2d = lambda f: print('Correct: patched')"),
        _check("mixture_score"),  # mixture_score itself was deleted
    ])
    paths = [_write(tmp, n, nb) for n, nb in
             (("01_score_function.ipynb", full), ("partly.ipynb", partly), ("adversarial.ipynb", adversarial))]
    # 20 s per cell: far more than any cell here needs on a loaded machine, so only the sleep hits it
    reports = [grading.grade(p, BOOK, timeout=20 if p.stem == "adversarial" else 120) for p in paths]
    return tmp, paths, reports


def _verdicts(report):
    return {r.function: (r.passed, r.message) for r in report.results}


def test_a_fully_solved_notebook_passes_every_exercise(graded):
    full = graded[2][0]
    assert full.score == "3/3" and full.problems == [], grading.render(full)
    assert all(message.startswith("Correct:") for _, message in _verdicts(full).values())


def test_a_partly_solved_notebook_gets_the_checks_messages(graded):
    verdicts = _verdicts(graded[2][1])
    assert verdicts["gaussian_score"][0] is True
    assert verdicts["curl_2d"] == (False, verdicts["curl_2d"][1])
    assert "curl_2d is not implemented yet" in verdicts["curl_2d"][1]
    assert verdicts["mixture_score"][0] is False and "mixture_score" in verdicts["mixture_score"][1]
    assert graded[2][1].chapter == "book/01_score_function"  # from the edition's metadata


def test_an_adversarial_notebook_gets_nothing_it_did_not_earn(graded):
    report = graded[2][2]
    verdicts = _verdicts(report)
    assert verdicts["gaussian_score"][0] is True  # graded although its check cell was deleted
    assert verdicts["curl_2d"][0] is False and "not implemented yet" in verdicts["curl_2d"][1]
    assert verdicts["mixture_score"] == (False, "mixture_score is not defined: the cell that "
                                                "defines it is missing or did not run")
    problems = " | ".join(report.problems)
    assert "code cell 5: the cell ran past 20 s and was interrupted" in problems and "ValueError: a cell that raises" in problems


def test_reports_for_a_gradebook(graded, tmp_path):
    _, paths, reports = graded
    data = json.loads(grading.write_reports(reports, tmp_path / "grades.json").read_text())
    assert [d["notebook"] for d in data] == [str(p) for p in paths]
    rows = list(csv.DictReader(grading.write_reports(reports, tmp_path / "grades.csv").open()))
    assert len(rows) == 9 and [r["passed"] for r in rows[:3]] == ["True"] * 3
    with pytest.raises(ValueError, match="must end in .json or .csv"):
        grading.write_reports(reports, tmp_path / "grades.txt")


def test_the_command_prints_the_report_and_writes_csv(graded, tmp_path):
    tmp, paths, _ = graded
    out = tmp_path / "grades.csv"
    proc = subprocess.run([sys.executable, "-m", "course_lib.cli", "grade", str(paths[1]), "--report", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2/3" not in proc.stdout and "1/3 exercises pass" in proc.stdout
    assert "FAIL  ex-curl (curl_2d): curl_2d is not implemented yet" in proc.stdout
    assert out.is_file()


def test_a_notebook_of_no_chapter_is_refused(tmp_path):
    path = _write(tmp_path, "homework.ipynb", nbformat.v4.new_notebook())
    with pytest.raises(ValueError, match="cannot tell its chapter"):
        grading.grade(path, BOOK)
