"""The student edition, and the chapters of the HTML book without solutions.

Student edition (for Jupyter and Colab): every reference solution replaced by nbgrader's stub
(`# YOUR CODE HERE` / `raise NotImplementedError`), the `{solution-start}` ... `{solution-end}`
cells and the solution text gone, every output cleared, the check cells kept (each fails with
"<function> is not implemented yet" until the exercise is done), the markdown converted to
plain Jupyter Markdown (`myst`), and the bootstrap cell naming the repository. Its metadata
records the chapter and its exercises, which the grader reads.

Without solutions (for the HTML book, MyST kept): the same removal in a notebook whose other
outputs are kept, so an already executed chapter can be built into HTML without running again.

    python -m course_lib.cli student --out student
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from . import bootstrap
from .exercises import Exercise, read_exercises, strip_source
from .myst import Converter
from .project import Book


def _clear(cell):
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    return cell


def _solution_cells(exercises: list[Exercise]) -> set[int]:
    return {i for e in exercises for i in (e.solution_start, e.solution_end)}


def course_metadata(docname: str, exercises: list[Exercise], edition: str) -> dict:
    return {"edition": edition, "chapter": docname,
            "exercises": [{"label": e.label, "function": e.function, "check": e.check_name}
                          for e in exercises]}


def student_notebook(nb, book: Book | None = None, docname: str | None = None):
    """The student edition of chapter `nb` (a copy; `nb` is not changed)."""
    book = book or Book.at()
    nb = nbformat.from_dict(nb)
    docname = docname or "book/chapter"
    exercises = read_exercises(book, f"{docname}.ipynb", nb)
    converter, drop = Converter(book, docname), _solution_cells(exercises)
    stubs = {e.solution for e in exercises}
    cells = []
    for i, cell in enumerate(nb.cells):
        if i in drop:
            continue
        if i == 0 and bootstrap.is_bootstrap(cell):
            cell = bootstrap.edition_cell(book)
        elif cell.cell_type == "markdown":
            cell.source = converter.convert(cell.source)
        elif cell.cell_type == "code":
            cell.source = strip_source(cell.source) if i in stubs else cell.source
        cells.append(_clear(cell))
    nb.cells = cells
    nb.metadata["course"] = course_metadata(docname, exercises, "student")
    return nb


def without_solutions(nb, book: Book | None = None, docname: str = "book/chapter"):
    """`nb` with its solutions removed and the exercises' outputs cleared; MyST and every
    other output kept (for the HTML build without solutions)."""
    book = book or Book.at()
    nb = nbformat.from_dict(nb)
    exercises = read_exercises(book, f"{docname}.ipynb", nb)
    drop = _solution_cells(exercises)
    stubs, checks = {e.solution for e in exercises}, {e.check for e in exercises}
    cells = []
    for i, cell in enumerate(nb.cells):
        if i in drop:
            continue
        if i in stubs:
            cell.source = strip_source(cell.source)
        cells.append(_clear(cell) if i in stubs | checks else cell)
    nb.cells = cells
    return nb


def write_edition(transform, book: Book, out_dir: str | Path, chapters=None) -> list[Path]:
    """Apply `transform(nb, book, docname)` to every chapter and write it under `out_dir`,
    at the chapter's path relative to the book (e.g. out_dir/book/01_score_function.ipynb)."""
    out_dir, written = Path(out_dir), []
    for path in chapters or book.chapters:
        docname = book.docname(path)
        target = out_dir / f"{docname}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(transform(nbformat.read(path, as_version=4), book, docname), target)
        written.append(target)
    return written


def write_student_edition(book_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """The student edition of every chapter in `book_dir` (a book's `book/` folder), written
    into `out_dir` with the chapters' file names. A chapter that cannot be converted (a chapter
    in progress) is skipped with a warning, so it does not stop the others; `course student`
    and the editions' tests are strict."""
    import warnings

    from .exercises import ConventionError
    from .myst import ConversionError

    book_dir = Path(book_dir).resolve()
    if not book_dir.is_dir():
        raise ValueError(f"book_dir must be a directory of notebooks, got {book_dir}")
    book = Book.at(book_dir.parent)
    written = []
    for path in sorted(p for p in book_dir.glob("*.ipynb") if not p.name.startswith((".", "_"))):
        target = Path(out_dir) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            nb = student_notebook(nbformat.read(path, as_version=4), book, book.docname(path))
        except (ConventionError, ConversionError) as err:
            warnings.warn(f"{path.name} skipped: {err}", stacklevel=2)
            continue
        nbformat.write(nb, target)
        written.append(target)
    return written
