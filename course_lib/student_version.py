"""The student edition's former entry point, kept for the tests and scripts that import it.

The edition itself lives in `course_lib.editions.student`; the command is
`python -m course_lib.cli student` (or `course student`). `python -m course_lib.student_version
book --out student` still works and writes the same notebooks.
"""

from __future__ import annotations

import sys

from .editions.exercises import BEGIN, END, strip_source  # noqa: F401
from .editions.student import student_notebook, write_student_edition  # noqa: F401


def main(argv=None) -> int:
    from .cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    book_dir = args.pop(0) if args and not args[0].startswith("-") else "book"
    return cli_main(["student", "--book-dir", book_dir, *args])


if __name__ == "__main__":
    sys.exit(main())
