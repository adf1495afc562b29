"""The Colab edition of every chapter: no MyST left, every citation resolved, every solution
collapsed (text in <details>, code in a hidden Colab form), the repository in one place."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.editions import bootstrap, myst
from course_lib.editions.colab import colab_notebook
from course_lib.editions.exercises import read_exercises, solution_lines
from course_lib.editions.project import Book

ROOT = Path(__file__).resolve().parents[1]
BOOK = Book.at(ROOT)
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("colab")
    proc = subprocess.run([sys.executable, "-m", "course_lib.cli", "colab", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return {p.name: nbformat.read(out / "book" / p.name, as_version=4) for p in CHAPTERS}


def test_no_myst_syntax_survives(edition):
    for name, nb in edition.items():
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                assert myst.leftovers(BOOK, cell.source) == [], f"{name}:\n{cell.source[:300]}"
                assert "{footcite" not in cell.source and "{doc}" not in cell.source
                assert not any(line.strip().startswith(":label:") for line in cell.source.splitlines())


def test_every_citation_resolves_to_a_reference(edition):
    """Each chapter cites by "Author (year)" and lists each cited entry once, at its end."""
    bib = myst.Converter(BOOK, "book/x").bibliography
    for path in CHAPTERS:
        nb = edition[path.name]
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        cited = {key for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"
                 for key in _keys(cell.source)}
        references = text.rsplit("## References", 1)[-1]
        for key in cited:
            assert bib.reference(key) in references, f"{path.name}: {key} is not in its reference list"
            assert bib.year(key) in text


def _keys(source):
    keys = []
    for token in myst.parse(BOOK, source):
        for child in token.children or []:
            if child.type == "myst_role" and child.meta["name"].startswith(("footcite", "cite")):
                keys += [k.strip() for k in child.content.split(",")]
        if myst.directive_name(token) is not None:
            keys += _keys(myst.read_directive(token).body)
    return keys


def test_solutions_are_visible_only_in_their_collapsed_form(edition):
    for path in CHAPTERS:
        nb = edition[path.name]
        source = nbformat.read(path, as_version=4)
        hidden = [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("cellView") == "form"
                  and c.metadata.get("jupyter", {}).get("source_hidden")]
        shown = "\n".join(c.source for c in nb.cells if c not in hidden and c.cell_type == "code")
        details = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("<details>")]
        exercises = read_exercises(BOOK, path, source)
        solutions = {e.solution for e in exercises}
        public = {line.strip() for i, c in enumerate(source.cells) if i not in solutions
                  for line in c.source.splitlines()}
        for e in exercises:
            lines = solution_lines(source.cells[e.solution].source)
            assert any(all(line in c.source for line in lines) for c in hidden), f"{path.name} {e.label}"
            secret = [line for line in lines if line not in public]
            assert secret and not [line for line in secret if line in shown], f"{path.name} {e.label}"
        assert len(details) == len(hidden) == len(exercises)
        for text in details:
            assert text.rstrip().endswith("</details>") and "<summary>Solution to Exercise " in text
        assert "BEGIN SOLUTION" not in shown + "".join(c.source for c in hidden)


def test_the_bootstrap_installs_from_the_repository_and_keeps_colabs_torch(edition):
    for nb in edition.values():
        first = nb.cells[0]
        assert first.source.startswith(bootstrap.TITLE) and first.metadata["cellView"] == "form"
        assert f"COURSE_LIB = {BOOK.install_requirement!r}" in first.source
        assert "--upgrade" not in first.source and "-U" not in first.source.split()
    assert BOOK.install_requirement == f"{BOOK.repository_url}@main".replace("https", "git+https")


def test_a_gpu_chapter_opens_on_a_gpu_runtime():
    nb = nbformat.read(CHAPTERS[0], as_version=4)
    nb.metadata["course"] = {"gpu": "On a GPU the models train at full size in minutes."}
    out = colab_notebook(nb, BOOK, BOOK.docname(CHAPTERS[0]))
    assert out.metadata["accelerator"] == "GPU" and out.metadata["colab"]["gpuType"] == "T4"
    assert out.cells[0].source.startswith("> **Faster on a GPU.** On a GPU the models train")
    assert "accelerator" not in colab_notebook(nbformat.read(CHAPTERS[0], as_version=4), BOOK).metadata


def test_links_go_to_the_published_book(edition):
    text = "\n".join(c.source for nb in edition.values() for c in nb.cells if c.cell_type == "markdown")
    assert f"]({BOOK.pages_url}/book/01_score_function.html)" in text


def _tracked_files():
    """The repository's files (git's list; every file but build outputs outside a git clone)."""
    proc = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 0:
        return [ROOT / f for f in proc.stdout.splitlines() if (ROOT / f).is_file()]
    skip = {".git", ".venv", "_build", "student", "colab", "__pycache__", ".pytest_cache"}
    return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
            and not any(part.endswith(".egg-info") for part in p.parts)]


def test_the_repository_url_is_written_in_one_place():
    owner_name = BOOK.repository_url.split("github.com/", 1)[1]
    holders = [str(p.relative_to(ROOT)) for p in _tracked_files()
               if p.suffix not in (".pt", ".png") and owner_name in p.read_text(errors="ignore")]
    assert holders == ["_config.yml"], (
        f"{owner_name} is written in {holders}: only _config.yml's repository.url may name the "
        "repository (chapters: copy chapter 1's bootstrap cell, which names none)")


def test_the_books_own_bootstrap_does_nothing_outside_colab_and_points_to_the_edition_inside(monkeypatch):
    """book/'s first cell names no repository: in a clone it is a no-op; in Colab without
    course_lib it stops with the way to the Colab edition, not at a later ImportError."""
    import importlib.util
    import types

    exec(bootstrap.SOURCE, {})  # here: course_lib is installed, not Colab
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "course_lib" else real(name, *a))
    exec(bootstrap.SOURCE, {})  # not Colab either: nothing to do
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(RuntimeError, match="the book's Colab button"):
        exec(bootstrap.SOURCE, {})
