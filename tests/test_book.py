"""The book builds to HTML from scratch, with every chapter executed and no warning."""

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.book


def test_book_builds_without_warnings(book_build):
    returncode, log, html = book_build
    # Sphinx's own messages ("file:line: WARNING: ..."); a kernel's log lines ("WARNING |") are not build problems
    warnings = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL):", line)]
    assert returncode == 0 and not warnings, "book build failed:\n" + "\n".join(warnings or log.splitlines()[-40:])
    assert (html / "index.html").is_file()


def test_every_chapter_is_built(book_html):
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        page = book_html / "book" / f"{nb.stem}.html"
        assert page.is_file(), f"{nb.name} has no page in the built book"


def test_math_is_served_locally(book_html):
    page = (book_html / "book" / "01_score_function.html").read_text()
    src = re.search(r'<script[^>]+src="([^"]*tex-mml-chtml\.js[^"]*)"', page)
    assert src and not src.group(1).startswith(("http:", "https:", "//")), "MathJax must load from the book"
    assert (book_html / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert (book_html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_notebooks_are_stored_without_outputs():
    for nb in sorted((ROOT / "book").rglob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        dirty = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])]
        assert not dirty, f"{nb.name}: code cells {dirty} have stored outputs"


def test_colab_launch_button_points_at_the_chapter(book_html):
    page = (book_html / "book" / "01_score_function.html").read_text()
    links = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', page)
    assert links, "no Colab launch button on chapter 1"
    assert all(link.endswith("book/01_score_function.ipynb") for link in links), links


def test_every_footnote_citation_has_its_entry(book_html):
    # MyST's footnote check is silenced for citations (see _config.yml), so check here instead.
    for page in sorted(book_html.rglob("*.html")):
        html = page.read_text()
        cited = set(re.findall(r'href="#(footcite-[\w-]+)"', html))
        missing = {c for c in cited if f'id="{c}"' not in html}
        assert not missing, f"{page.name}: citations without a bibliography entry: {missing}"
