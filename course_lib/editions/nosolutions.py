"""The HTML book without solutions, for instructors who must not publish them.

The book is built from a staged copy of its sources in which every chapter is an already
executed notebook with its solutions removed (`student.without_solutions`): no solution code or
text is ever in the sources Sphinx reads, so none reaches a page, the search index, `_sources/`
or the downloads. The executed notebooks come from a previous build (its `jupyter_execute/`
folder, which a normal build writes) or are executed here first; the build itself executes
nothing (`execute_notebooks: off`), so it costs a Sphinx run, not a second execution of every
chapter. The page downloads are the student edition, and the launch buttons open the student
edition on the launch branch (`student/book/...`). Afterwards every output file is searched for
the chapters' solution code and text, and any trace is an error.

    python -m course_lib.cli book --no-solutions --executed _build/html/../jupyter_execute
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

from .exercises import read_exercises, solution_lines
from .project import Book
from .student import student_notebook, without_solutions

COPIED = ("_config.yml", "_toc.yml", "references.bib", "book", "_static")


def _executed(book: Book, path: Path, executed: Path | None, timeout: int):
    docname = book.docname(path)
    if executed is not None:
        ready = executed / f"{docname}.ipynb"
        if not ready.is_file():
            raise ValueError(f"executed must hold {docname}.ipynb (a build's jupyter_execute/), not found in {executed}")
        return nbformat.read(ready, as_version=4)
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def _built_chapters(book: Book) -> list[Path]:
    """The chapters the book builds: those in _toc.yml."""
    return [p for p in book.chapters if book.docname(p) in book.docnames]


def stage(book: Book, staging: Path, executed: str | Path | None = None) -> Path:
    """A copy of the book's sources with executed, solution-free chapters; returns its root."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in COPIED:
        src = book.root / name
        if src.is_dir():
            shutil.copytree(src, staging / name, ignore=shutil.ignore_patterns("*.ipynb", ".*", "__pycache__"))
        elif src.is_file():
            shutil.copy2(src, staging / name)
    config = dict(book.config)
    timeout = int((config.get("execute") or {}).get("timeout", 900))
    downloads = staging / "_student_downloads"
    for path in _built_chapters(book):
        docname = book.docname(path)
        nb = _executed(book, path, Path(executed) if executed else None, timeout)
        nbformat.write(without_solutions(nb, book, docname), staging / f"{docname}.ipynb")
        (downloads / docname).parent.mkdir(parents=True, exist_ok=True)
        source = nbformat.read(path, as_version=4)
        nbformat.write(student_notebook(source, book, docname), downloads / f"{docname}.ipynb")
    config["execute"] = {**(config.get("execute") or {}), "execute_notebooks": "off"}
    config["exclude_patterns"] = list(config.get("exclude_patterns", [])) + ["_student_downloads"]
    config["repository"] = {**config.get("repository", {}), "path_to_book": "student"}
    sphinx = dict(config.get("sphinx") or {})
    sphinx["config"] = {**(sphinx.get("config") or {}), "course_downloads": str(downloads)}
    config["sphinx"] = sphinx
    (staging / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return staging


def build(book: Book, out: str | Path, executed: str | Path | None = None) -> Path:
    """Build the book without solutions into `out`; returns its HTML folder."""
    out = Path(out).resolve()
    staging = stage(book, out / "source", executed)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(staging), "--all", "-W", "-n", "--keep-going",
           "--path-output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    problems = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL):", line)]
    if proc.returncode != 0 or problems:
        raise RuntimeError("the build without solutions failed:\n" + "\n".join(problems or log.splitlines()[-30:]))
    html_dir = out / "_build" / "html"
    leaks = find_solutions(book, html_dir)
    if leaks:
        raise RuntimeError("solutions leaked into the build:\n" + "\n".join(leaks[:20]))
    return html_dir


def fingerprints(book: Book) -> list[str]:
    """What no solution-free output may contain: every solution's code lines (20 characters or
    more, and not found elsewhere in its chapter) and the plain-text runs of its explanation
    (eight words or more between math and markup)."""
    from .exercises import _directive

    found = []
    for path in _built_chapters(book):
        nb = nbformat.read(path, as_version=4)
        exercises = read_exercises(book, path, nb)
        hidden = {i for e in exercises for i in (e.solution_start, e.solution)}
        public = "\n".join(c.source for i, c in enumerate(nb.cells) if i not in hidden)
        for e in exercises:
            found += [line for line in solution_lines(nb.cells[e.solution].source)
                      if len(line) >= 20 and line not in public]
            _, text = _directive(book, nb.cells[e.solution_start], "solution-start")
            for run in re.split(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`|[*_()\[\]{}:;,.!?]", text, flags=re.S):
                words = run.split()
                if len(words) >= 8 and " ".join(words) not in " ".join(public.split()):
                    found.append(" ".join(words))
    return found


def visible_text(raw: str) -> str:
    """HTML (or any text) as a reader sees it: tags dropped, entities decoded, spaces folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", raw)).split())


def find_solutions(book: Book, folder: Path) -> list[str]:
    """'file: fragment' for every solution fingerprint found in the text files under `folder`."""
    prints, leaks = fingerprints(book), []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix not in (".html", ".js", ".ipynb", ".txt", ".md", ".json", ".py"):
            continue
        raw = path.read_text(errors="replace")
        if path.suffix == ".ipynb":  # the cells' text, not its JSON escapes
            raw = "\n".join(c.source for c in nbformat.reads(raw, as_version=4).cells)
        text = visible_text(raw)
        for fragment in prints:
            if fragment in raw or " ".join(fragment.split()) in text:
                leaks.append(f"{path.relative_to(folder)}: {fragment[:70]}")
    return leaks
