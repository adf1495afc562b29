"""Notebook transformations: the editions of the book's chapters, and grading.

The chapters under `book/` are written for the HTML book (MyST markup, collapsed solutions).
Everything else is generated from them, never edited by hand:

- `myst`: MyST markup -> plain Jupyter Markdown (Colab and Jupyter render it), parsed with
  markdown-it-py as MyST itself parses it; `citations` turns footnote citations into
  "Author (year)" and a reference list from `references.bib`.
- `exercises`: the exercise convention (statement, cell to fill, collapsed reference solution
  between `### BEGIN SOLUTION` / `### END SOLUTION`, check cell) and its validation.
- `student`: the student edition (solutions stubbed, outputs cleared, markdown converted) and
  the notebooks of the HTML build without solutions.
- `colab`: the Colab edition (markdown converted, solutions hidden in collapsed forms).
- `grading`: runs a student's notebook in its own kernel and grades it with the library's checks.
- `nosolutions`: the HTML book without solutions, built from already executed notebooks.
- `project`: what the editions read from the book: `_config.yml` (the repository URL, the one
  place it is written), `_toc.yml`, titles, numbering and labels.

These modules need the book's build tools (markdown-it-py, pybtex, nbclient, PyYAML from
`requirements-dev.txt`); importing `course_lib` itself does not import them.
"""
