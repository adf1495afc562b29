"""Write the student edition of the chapters: reference solutions removed, checks kept.

In a chapter, solution code sits between `### BEGIN SOLUTION` and `### END SOLUTION` lines
of an exercise's code cell, and the cell is wrapped by sphinx-exercise's
`{solution-start}` / `{solution-end}` markdown cells (collapsed in the HTML book). The
student edition replaces each solution block by a stub that raises NotImplementedError and
drops the two wrapper cells, so the exercise statement, the cell to fill and the check
cell remain, and the check fails until the student writes the code.

    python -m course_lib.student_version book --out student
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_WRAPPER = re.compile(r"^\s*(```|:::)\{solution-(start|end)\}")


def strip_source(source: str) -> str:
    """Replace every BEGIN/END SOLUTION block of a code cell by an indented stub."""
    out, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError("nested '### BEGIN SOLUTION' marker")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError"]
        elif stripped == END:
            if not inside:
                raise ValueError("'### END SOLUTION' without a matching BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("'### BEGIN SOLUTION' without a matching END")
    return "\n".join(out)


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `nb` with solutions stubbed, solution wrappers dropped and outputs cleared."""
    nb = nbformat.from_dict(nb)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and _WRAPPER.match(cell.source):
            continue
        if cell.cell_type == "code":
            cell.source = strip_source(cell.source)
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    nb.cells = cells
    return nb


def write_student_edition(book_dir: Path, out_dir: Path) -> list[Path]:
    """Write the student edition of every notebook under `book_dir` into `out_dir`."""
    book_dir, out_dir = Path(book_dir), Path(out_dir)
    if not book_dir.is_dir():
        raise ValueError(f"book_dir must be a directory of notebooks, got {book_dir}")
    written = []
    for path in sorted(book_dir.rglob("*.ipynb")):
        if any(part.startswith((".", "_")) for part in path.relative_to(book_dir).parts):
            continue
        target = out_dir / path.relative_to(book_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student_notebook(nbformat.read(path, as_version=4)), target)
        written.append(target)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("book_dir", type=Path, help="folder of the chapters (e.g. book)")
    parser.add_argument("--out", type=Path, default=Path("student"), help="where to write the edition")
    args = parser.parse_args(argv)
    for path in write_student_edition(args.book_dir, args.out):
        print(path)


if __name__ == "__main__":
    main()
