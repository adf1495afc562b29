"""The book's one exercise convention, read from a chapter, and the student's stubs.

An exercise is five consecutive cells:

1. markdown: an `{exercise}` block with a `:label:` and a title (the statement);
2. markdown: `{solution-start} <label>` with `:class: dropdown`, then the solution's text;
3. code: the cell to fill, its reference solution between `### BEGIN SOLUTION` and
   `### END SOLUTION` lines (nbgrader's markers) inside the function it defines;
4. markdown: `{solution-end}` alone;
5. code: the check cell, `exercises.check_<name>(<function>)` from `course_lib.exercises`.

`read_exercises` returns them, and `ConventionError` lists every way a chapter drifts from this.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import nbformat

from . import myst
from .project import Book

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError")


class ConventionError(ValueError):
    """A chapter's exercise cells do not follow the convention; one line per problem."""


@dataclasses.dataclass(frozen=True)
class Exercise:
    label: str
    title: str
    statement: int  # cell indices, in order
    solution_start: int
    solution: int
    solution_end: int
    check: int
    function: str  # the name the solution defines and the check receives
    check_name: str  # "check_<name>" in course_lib.exercises


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
            out += [f"{indent}{stub}" for stub in STUB]
        elif stripped == END:
            if not inside:
                raise ValueError("'### END SOLUTION' without a matching BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("'### BEGIN SOLUTION' without a matching END")
    return "\n".join(out)


def drop_markers(source: str) -> str:
    """The reference solution without its marker lines (for editions that show it)."""
    return "\n".join(line for line in source.splitlines() if line.strip() not in (BEGIN, END))


def solution_lines(source: str) -> list[str]:
    """The non-blank lines between the markers: the code that no student edition may show."""
    out, inside = [], False
    for line in source.splitlines():
        if line.strip() in (BEGIN, END):
            inside = line.strip() == BEGIN
        elif inside and line.strip():
            out.append(line.strip())
    return out


def check_calls(source: str) -> list[tuple[str, str]]:
    """(check name, argument name) of every `exercises.check_*(name)` call in a code cell."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []
    calls = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr.startswith("check_") and _is_exercises(node.func.value)):
            arg = node.args[0].id if node.args and isinstance(node.args[0], ast.Name) else ""
            calls.append((node.func.attr, arg))
    return calls


def _is_exercises(node) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "exercises"
    return isinstance(node, ast.Attribute) and node.attr == "exercises"


def _python(source: str) -> str:
    """Cell source with IPython's magics turned into Python, so `ast` can read it."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def defined_functions(source: str) -> list[str]:
    try:
        return [n.name for n in ast.parse(_python(source)).body if isinstance(n, ast.FunctionDef)]
    except SyntaxError:
        return []


def _directive(book: Book, cell, name: str):
    """The first `{name}` directive of a markdown cell and the text after it, or (None, "")."""
    if cell is None or cell.cell_type != "markdown":
        return None, ""
    for token in myst.parse(book, cell.source):
        if myst.directive_name(token) == name:
            rest = "".join(cell.source.splitlines(keepends=True)[token.map[1]:])
            return myst.read_directive(token), rest
    return None, ""


def is_solution_marker(book: Book, cell) -> bool:
    return any(_directive(book, cell, name)[0] is not None for name in myst.SOLUTION_MARKERS)


def read_exercises(book: Book, path: str | Path, nb=None) -> list[Exercise]:
    """The exercises of a chapter; ConventionError listing every departure from the convention."""
    nb = nb if nb is not None else nbformat.read(path, as_version=4)
    cells, found, problems = nb.cells, [], []
    name = Path(path).name
    for i, cell in enumerate(cells):
        statement, _ = _directive(book, cell, "exercise")
        if statement is None:
            if cell.cell_type == "code" and BEGIN in cell.source and not any(i == e.solution for e in found):
                problems.append(f"{name} cell {i}: solution markers outside an exercise's solution block")
            continue
        found_or_problem = _read_one(book, cells, i, statement)
        if isinstance(found_or_problem, str):
            problems.append(f"{name}, exercise at cell {i}: {found_or_problem}")
        else:
            found.append(found_or_problem)
    if problems:
        raise ConventionError("\n".join(problems))
    return found


def _read_one(book, cells, i, statement) -> Exercise | str:
    label = statement.options.get("label")
    if not label:
        return "the {exercise} block needs a :label: (the solution refers to it)"
    if not statement.argument:
        return f"exercise {label!r} needs a title after {{exercise}}"
    cell = lambda k: cells[k] if k < len(cells) else None  # noqa: E731
    start, _ = _directive(book, cell(i + 1), "solution-start")
    if start is None or start.argument != label:
        return f"the cell after exercise {label!r} must open its solution: {{solution-start}} {label}"
    if start.options.get("class") != "dropdown":
        return f"the solution of {label!r} must be collapsed: add ':class: dropdown' to {{solution-start}}"
    code = cell(i + 2)
    if code is None or code.cell_type != "code" or BEGIN not in code.source:
        return f"the cell to fill of {label!r} must follow {{solution-start}}, its solution between {BEGIN!r} and {END!r}"
    try:
        strip_source(code.source)
    except ValueError as err:
        return f"the solution cell of {label!r}: {err}"
    end, _ = _directive(book, cell(i + 3), "solution-end")
    if end is None or len(myst.parse(book, cell(i + 3).source)) != 1:
        return f"the solution cell of {label!r} must be followed by a cell holding only {{solution-end}}"
    check = cell(i + 4)
    calls = check_calls(check.source) if check is not None and check.cell_type == "code" else []
    if len(calls) != 1:
        return f"the cell after {{solution-end}} of {label!r} must make one course_lib.exercises check call"
    check_name, function = calls[0]
    if function not in defined_functions(code.source):
        return f"the check of {label!r} must receive the function its solution cell defines, got {function!r}"
    from course_lib import exercises as library

    if check_name not in library.__all__:
        return f"{check_name} is not in course_lib.exercises.__all__ (exercise {label!r})"
    return Exercise(label, statement.argument, i, i + 1, i + 2, i + 3, i + 4, function, check_name)
