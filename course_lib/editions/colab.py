"""The Colab edition: each chapter as Colab and plain Jupyter render it, solutions hidden.

- Markdown: MyST converted to plain Jupyter Markdown (`myst`: numbered exercises and
  definitions, blockquote admonitions, "Author (year)" citations with a reference list, links
  to the published pages).
- Solutions: the explanation sits in an HTML `<details>` block (collapsed until its summary
  is clicked, in Jupyter and Colab alike); the code stays an executable cell, so the notebook
  still runs top to bottom, shown as a Colab form (`#@title` with `cellView: form`: Colab shows
  the title and a "Show code" button, not the code) and with `jupyter.source_hidden` (JupyterLab
  and Notebook 7 collapse the input). The `### BEGIN/END SOLUTION` markers are dropped.
- The bootstrap cell names the repository; outputs are cleared.
- A chapter whose metadata says what a GPU changes (`"course": {"gpu": "..."}`) opens on a GPU
  runtime (`accelerator: GPU`) and says so in its first line.

    python -m course_lib.cli colab --out colab
"""

from __future__ import annotations

import nbformat

from . import bootstrap
from .exercises import drop_markers, read_exercises
from .myst import Converter
from .project import Book
from .student import _clear, course_metadata

GPU_NOTE = "> **Faster on a GPU.** {what} In Colab: *Runtime > Change runtime type > GPU*."


def solution_summary(number) -> str:
    return f"Solution to Exercise {number}" if number else "Solution"


def colab_notebook(nb, book: Book | None = None, docname: str = "book/chapter"):
    """The Colab edition of chapter `nb` (a copy)."""
    book = book or Book.at()
    nb = nbformat.from_dict(nb)
    exercises = read_exercises(book, f"{docname}.ipynb", nb)
    converter = Converter(book, docname)
    roles = {}
    for e in exercises:
        roles.update({e.solution_start: ("text", e), e.solution: ("code", e), e.solution_end: ("end", e)})
    cells = []
    for i, cell in enumerate(nb.cells):
        role, exercise = roles.get(i, (None, None))
        if i == 0 and bootstrap.is_bootstrap(cell):
            cell = bootstrap.edition_cell(book)
        elif role == "end":
            continue
        elif role == "text":
            cell.source = _details(converter, cell.source, _number(book, docname, exercise))
        elif role == "code":
            title = solution_summary(_number(book, docname, exercise))
            cell.source = f"#@title {title}\n{drop_markers(cell.source)}"
            cell.metadata.update({"cellView": "form", "jupyter": {"source_hidden": True}})
        elif cell.cell_type == "markdown":
            cell.source = converter.convert(cell.source)
        cells.append(_clear(cell))
    gpu = (nb.metadata.get("course") or {}).get("gpu")
    if gpu:
        cells.insert(0, nbformat.v4.new_markdown_cell(GPU_NOTE.format(what=gpu.strip())))
        nb.metadata["accelerator"] = "GPU"
    nb.cells = cells
    nb.metadata["colab"] = {"provenance": [], "toc_visible": True, **({"gpuType": "T4"} if gpu else {})}
    nb.metadata["course"] = {**course_metadata(docname, exercises, "colab"), **({"gpu": gpu} if gpu else {})}
    return nb


def _number(book: Book, docname: str, exercise) -> int | None:
    target = book.index.targets.get(exercise.label)
    return int(target.text.split()[-1]) if target and target.text.split()[-1].isdigit() else None


def _details(converter: Converter, source: str, number) -> str:
    """The solution's text (after its {solution-start} line) inside a collapsed <details>."""
    from .myst import directive_name, parse

    tokens = parse(converter.book, source)
    start = next(t for t in tokens if directive_name(t) == "solution-start")
    rest = "".join(source.splitlines(keepends=True)[start.map[1]:]).strip("\n")
    body = converter.convert(rest).strip("\n")
    # blank lines around the body: Markdown inside an HTML block needs them to be parsed
    return f"<details>\n<summary>{solution_summary(number)}</summary>\n\n{body}\n\n</details>"
