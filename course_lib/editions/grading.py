"""Grade a student's notebook with the library's checks, in a kernel of its own.

The exercises come from the instructor's chapter in `book/` (not from the submission, which a
student can edit). The grader runs the submission's code cells in a fresh Jupyter kernel
(a separate process; never in the grader's interpreter), skipping its check cells, so editing
a check cell changes nothing. A cell that raises is recorded and the run goes on; a cell that
runs past the timeout is interrupted and recorded. Then, in the same kernel, it reloads
`course_lib` from disk (undoing any patching by the notebook) and runs each exercise's check
on the function the notebook defined. An exercise passes only if its check ran to its
"Correct:" line; a missing function, a timeout or a dead kernel is a failure.

This is not a sandbox: the student's code runs with the grader's permissions.

    python -m course_lib.cli grade submissions/*.ipynb --report grades.csv
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import secrets
from pathlib import Path

import nbformat

from .exercises import check_calls, read_exercises
from .project import Book

PRELUDE = '''\
import contextlib as _c, io as _io, json as _json, sys as _sys
for _m in [m for m in _sys.modules if m == "course_lib" or m.startswith("course_lib.")]:
    del _sys.modules[_m]  # a fresh course_lib from disk: patches made by the notebook are gone
import course_lib.exercises as _course_checks
from course_lib.exercises.checking import ExerciseFailure as _CourseFailure


def _course_grade(_check, _function, _nonce):
    _f = globals().get(_function)
    if not callable(_f):
        _v = (False, f"{_function} is not defined: the cell that defines it is missing or did not run")
    else:
        _out = _io.StringIO()
        try:
            with _c.redirect_stdout(_out):
                getattr(_course_checks, _check)(_f)
            _line = (_out.getvalue().strip().splitlines() or [""])[-1]
            _v = (_line.startswith("Correct:"), _line or "the check printed no verdict")
        except _CourseFailure as _err:
            _v = (False, str(_err))
        except Exception as _err:
            _v = (False, f"the check stopped: {type(_err).__name__}: {_err}")
    print(_nonce + _json.dumps(_v))
'''


@dataclasses.dataclass
class Result:
    label: str
    function: str
    check: str
    passed: bool = False
    message: str = "not run"


@dataclasses.dataclass
class Report:
    notebook: str
    chapter: str
    results: list[Result]
    problems: list[str]  # what went wrong while running the notebook

    @property
    def score(self) -> str:
        return f"{sum(r.passed for r in self.results)}/{len(self.results)}"


def chapter_of(book: Book, nb, path: Path) -> Path:
    """The instructor's chapter a submission belongs to: its metadata, else its file name."""
    docname = (nb.metadata.get("course") or {}).get("chapter")
    candidates = [book.root / f"{docname}.ipynb"] if docname else []
    candidates += [c for c in book.chapters if c.stem == path.stem or path.stem.startswith(c.stem)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ValueError(f"{path.name}: cannot tell its chapter (no course.chapter metadata, no chapter's file name); pass --chapter")


def grading_notebook(submission, exercises, nonce: str):
    """The submission's code cells without its check cells, then the grader's cells; and the
    numbers (1, 2, ... among the submission's code cells) of the cells it runs."""
    code = [c for c in submission.cells if c.cell_type == "code"]
    numbers = [k + 1 for k, c in enumerate(code) if not check_calls(c.source)]  # as the student counts
    cells = [nbformat.v4.new_code_cell(code[k - 1].source) for k in numbers]
    first = len(cells)
    cells.append(nbformat.v4.new_code_cell(PRELUDE))
    cells += [nbformat.v4.new_code_cell(f"_course_grade({e.check_name!r}, {e.function!r}, {nonce!r})")
              for e in exercises]
    return nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                                                                          "display_name": "Python 3",
                                                                          "language": "python"}}), numbers


def _error(cell, timeout: int = 0) -> str | None:
    for out in cell.get("outputs", []):
        if out.output_type == "error":
            if out.ename == "KeyboardInterrupt":  # the grader's interrupt at the timeout
                return f"the cell ran past {timeout} s and was interrupted"
            return f"{out.ename}: {out.evalue}".strip().rstrip(":")
    return None


def grade(path: str | Path, book: Book | None = None, chapter: str | Path | None = None,
          timeout: int = 120, profile: str = "ci") -> Report:
    """Run one submission and grade it; see the module's docstring."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    book, path = book or Book.at(), Path(path)
    if timeout < 1:
        raise ValueError(f"timeout must be at least 1 second, got {timeout}")
    submission = nbformat.read(path, as_version=4)
    source = Path(chapter) if chapter else chapter_of(book, submission, path)
    exercises = read_exercises(book, source)
    results = [Result(e.label, e.function, e.check_name) for e in exercises]
    nonce = secrets.token_hex(16)
    nb, numbers = grading_notebook(submission, exercises, nonce)
    first = len(numbers)
    env = {**os.environ, "COURSE_PROFILE": profile}
    client = NotebookClient(
        nb, timeout=timeout, allow_errors=True, interrupt_on_timeout=True, kernel_name="python3",
        error_on_timeout={"ename": "Timeout", "evalue": f"the cell ran past {timeout} s and was interrupted"},
        resources={"metadata": {"path": str(path.parent.resolve())}})
    problems = []
    try:
        client.execute(env=env)  # the kernel's environment
    except DeadKernelError:
        problems.append("the notebook's kernel died; the exercises after that point did not run")
    except Exception as err:  # a kernel that cannot start, ...
        problems.append(f"the run stopped: {type(err).__name__}: {err}")
    for number, cell in zip(numbers, nb.cells):
        if (error := _error(cell, timeout)) is not None:
            problems.append(f"code cell {number}: {error}")
    if (error := _error(nb.cells[first])) is not None:
        problems.append(f"the grader could not load course_lib's checks: {error}")
    for result, cell in zip(results, nb.cells[first + 1:]):
        _read_verdict(result, cell, nonce, timeout)
    return Report(str(path), book.docname(source), results, problems)


def _read_verdict(result: Result, cell, nonce: str, timeout: int) -> None:
    for out in cell.get("outputs", []):
        for line in (out.get("text", "") if out.output_type == "stream" else "").splitlines():
            if line.startswith(nonce):
                result.passed, result.message = json.loads(line[len(nonce):])
                return
    error = _error(cell, timeout)
    result.passed = False
    result.message = f"the check did not finish ({error})" if error else "the check did not run"


def render(report: Report) -> str:
    lines = [f"{report.notebook} ({report.chapter}): {report.score} exercises pass"]
    for r in report.results:
        lines.append(f"  {'PASS' if r.passed else 'FAIL'}  {r.label} ({r.function}): {r.message}")
    lines += [f"  note: {p}" for p in report.problems]
    return "\n".join(lines)


def write_reports(reports: list[Report], path: str | Path) -> Path:
    """A gradebook file: CSV (one row per exercise) or JSON, by the file's suffix."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps([dataclasses.asdict(r) for r in reports], indent=2) + "\n")
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["notebook", "chapter", "exercise", "function", "check", "passed", "message"])
            for rep in reports:
                for r in rep.results:
                    writer.writerow([rep.notebook, rep.chapter, r.label, r.function, r.check, r.passed, r.message])
    else:
        raise ValueError(f"report must end in .json or .csv, got {path.name}")
    return path
