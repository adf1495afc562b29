"""The built book and its editions: numbers as the HTML shows them, downloads and launch buttons
that give the Colab edition, the execution status page, and the build without solutions made
from the executed chapters of the same build (no second execution)."""

import html
import re

import nbformat
import pytest

from conftest import BUILD_DIR, ROOT
from course_lib.editions import nosolutions
from course_lib.editions.project import Book

pytestmark = pytest.mark.book
BOOK = Book.at(ROOT)


def _chapters(book_html):
    return [d for d in BOOK.docnames if (ROOT / f"{d}.ipynb").is_file() and (book_html / f"{d}.html").is_file()]


def test_editions_number_exercises_and_definitions_as_the_html_does(book_html):
    checked = 0
    for label, target in BOOK.index.targets.items():
        if not target.text.split()[0] in ("Exercise", "Definition", "Theorem", "Lemma", "Proposition"):
            continue
        page = (book_html / f"{target.docname}.html").read_text()
        anchor = page.index(f'id="{label}"')
        shown = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page[anchor:anchor + 1500])).split())
        assert shown.startswith(target.text + " ") or f" {target.text} " in shown[:80], (label, shown[:80])
        checked += 1
    assert checked >= 3


def test_page_downloads_are_the_colab_edition(book_html):
    for docname in _chapters(book_html):
        download = nbformat.read(book_html / "_sources" / f"{docname}.ipynb", as_version=4)
        assert download.metadata["course"]["edition"] == "colab", docname
        page = (book_html / f"{docname}.html").read_text()
        assert f'href="../_sources/{docname}.ipynb"' in page
        assert f'href="{BOOK.colab_url(docname + ".ipynb")}"' in page


def test_execution_status_page_lists_every_chapter(book_html):
    text = " ".join(re.sub(r"<[^>]+>", " ", (book_html / "book" / "execution.html").read_text()).split())
    for docname in _chapters(book_html):
        assert re.search(re.escape(docname) + r" \S+ \S+ force [0-9.]+ ✅", text), docname


def test_the_book_without_solutions_from_the_executed_chapters(book_html, tmp_path):
    out = tmp_path / "no-solutions"
    built = nosolutions.build(BOOK, out, executed=BUILD_DIR / "_build" / "jupyter_execute")
    assert nosolutions.find_solutions(BOOK, out) == []  # pages, search index, sources, downloads
    for docname in _chapters(book_html):
        page = (built / f"{docname}.html").read_text()
        assert "YOUR CODE HERE" in page and 'class="solution' not in page
        download = nbformat.read(built / "_sources" / f"{docname}.ipynb", as_version=4)
        assert download.metadata["course"]["edition"] == "student"
        assert f"/blob/{BOOK.launch_branch}/student/{docname}.ipynb" in page
        figures = len(re.findall(r"<img ", page))
        assert figures == len(re.findall(r"<img ", (book_html / f"{docname}.html").read_text())), docname
