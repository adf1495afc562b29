"""Every chapter's first cell, which installs course_lib where it is missing.

In `book/` the cell names no repository (`COURSE_LIB = None`), so it does nothing in the book,
in nbval and in a clone of the repository (where `pip install -e .` installed the package);
opened in Colab straight from the repository, it says to use the book's Colab button instead of
failing later on `import course_lib`.
The Colab and student editions write the requirement derived from `_config.yml`'s
`repository.url` into it; pip then installs course_lib and whatever of its requirements is
missing, and keeps Colab's own torch (`torch>=2.1` is already satisfied there).
"""

from __future__ import annotations

import nbformat

from .project import Book

SOURCE = '''\
# In Colab, or a Jupyter without course_lib: install it. The Colab and student editions
# name the course repository below; in the book and in a clone this does nothing.
import importlib.util, subprocess, sys

COURSE_LIB = None  # what pip installs; `course colab` and `course student` write it
if COURSE_LIB and not importlib.util.find_spec("course_lib"):
    pip = [sys.executable, "-m", "pip", "install", "-q", COURSE_LIB]
    subprocess.run(pip, check=True)
elif "google.colab" in sys.modules and not importlib.util.find_spec("course_lib"):
    raise RuntimeError("this copy of the chapter installs nothing: open the chapter with "
                       "the book's Colab button, which opens its Colab edition")'''

TITLE = "#@title Install course_lib (run this cell first)"


def is_bootstrap(cell) -> bool:
    """The first-cell installer, in today's form or an older one that names a repository."""
    return (cell.cell_type == "code" and "remove-cell" in cell.metadata.get("tags", [])
            and "pip" in cell.source and "install" in cell.source)


def rendered(requirement: str) -> str:
    """The bootstrap code with the requirement filled in."""
    return SOURCE.replace("COURSE_LIB = None", f"COURSE_LIB = {requirement!r}", 1)


def edition_cell(book: Book, requirement: str | None = None):
    """The bootstrap as the editions carry it: a Colab form cell (code shown on request)."""
    cell = nbformat.v4.new_code_cell(f"{TITLE}\n{rendered(requirement or book.install_requirement)}")
    cell.metadata.update({"cellView": "form", "tags": ["remove-cell"]})
    return cell
