"""Every page of the built book, opened in headless Chromium: math typeset, images loaded,
no script errors, nothing fetched from outside the book, exercise solutions collapsed."""

import functools
import http.server
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "_build" / "screenshots"

# Known third-party noise that is not a fault of the book. Keep each entry commented.
ALLOWED_ERRORS = [
    # Chromium logs a 404 for the favicon it requests on its own; the book ships none.
    re.compile(r"favicon\.ico"),
    # Jupyter Book 1 emits sphinx-thebe's inline configuration script twice, so the second
    # `const THEBE_JS_URL` fails to redeclare; the first copy works and the book uses no Thebe.
    re.compile(r"Identifier 'THEBE_JS_URL' has already been declared"),
    # pydata-sphinx-theme reads an empty theme mode from a fresh browser profile, logs it
    # as an error and falls back to "auto", which is what a first visit should get.
    re.compile(r"Got invalid theme mode: \. Resetting to auto"),
]

WAIT_FOR_MATHJAX = """
async () => {
  if (!window.MathJax) { return "absent"; }
  for (let i = 0; i < 200 && !(MathJax.startup && MathJax.startup.promise); i++) {
    await new Promise(r => setTimeout(r, 50));
  }
  await MathJax.startup.promise;
  return "done";
}
"""

UNTYPESET_MATH = """
() => Array.from(document.querySelectorAll('.math, .MathJax_Preview'))
        .filter(el => !el.querySelector('mjx-container') && !el.closest('mjx-container'))
        .map(el => el.textContent.slice(0, 60))
"""

# A `$` left in the prose (outside code and typeset math) is math that MyST did not see as math,
# e.g. inline math wrapped onto a line that starts with "+ " or "- ", which Markdown reads as a list.
STRAY_DOLLARS = """
() => {
  const root = document.querySelector('article') || document.body;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const found = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest('pre, code, script, style, mjx-container, .MathJax, .math')) continue;
    if (node.textContent.includes('$')) found.push(node.textContent.trim().slice(0, 80));
  }
  return found;
}
"""

BROKEN_IMAGES = """
() => Array.from(document.images)
        .filter(img => !(img.complete && img.naturalWidth > 0))
        .map(img => img.getAttribute('src'))
"""


def _pages(html: Path) -> list[Path]:
    """Every page of the book; redirect stubs (index.html) are covered by their targets."""
    skip = {"_static", "_sources", "_images", "_sphinx_design_static"}
    return sorted(p for p in html.rglob("*.html") if not skip & set(p.relative_to(html).parts)
                  and 'http-equiv="Refresh"' not in p.read_text())


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(book_html):
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
            "--no-first-run", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def _open(browser, server, path):
    """Open one page; return (page, script errors, requests to other hosts)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, external = [], []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and errors.append(f"console: {msg.text}"))

    def route(r):
        if urlparse(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:  # the book must work offline: record and refuse anything else
            external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(f"{server}/{path}", wait_until="load")
    assert page.evaluate(WAIT_FOR_MATHJAX) in ("done", "absent")
    errors = [e for e in errors if not any(a.search(e) for a in ALLOWED_ERRORS)]
    return page, errors, external


def test_every_page_renders(book_html, server, browser):
    problems = {}
    for html_file in _pages(book_html):
        rel = html_file.relative_to(book_html).as_posix()
        page, errors, external = _open(browser, server, rel)
        issues = errors + [f"untypeset math: {m!r}" for m in page.evaluate(UNTYPESET_MATH)]
        issues += [f"broken image: {src}" for src in page.evaluate(BROKEN_IMAGES)]
        issues += [f"external request: {url}" for url in external]  # the book must work offline
        text = page.inner_text("article") if page.locator("article").count() else ""
        issues += ["raw TeX delimiter left in the text"] if re.search(r"\\\(|\\\[|\$\$", text) else []
        issues += [f"stray $ in the prose: {t!r}" for t in page.evaluate(STRAY_DOLLARS)]
        page.close()
        if issues:
            problems[rel] = issues
    assert not problems, problems


# What each chapter's page must show: at least this many typeset equations, figures (images
# wider than 100 px, animations' still frames not counted) and collapsed solutions.
CHAPTERS = {
    "01_score_function": {"math": 20, "figures": 3, "solutions": 3},
    "02_langevin_dynamics": {"math": 30, "figures": 22, "solutions": 3, "explorer_images": 18},  # 4 + 18 in the explorer
    "03_score_matching": {"math": 150, "figures": 6, "solutions": 4},
    "04_ncsn": {"math": 80, "figures": 8, "solutions": 4},
    "05_sde": {"math": 300, "figures": 10, "solutions": 3},
    "06_probability_flow": {"math": 150, "figures": 5, "solutions": 3},  # 7 with the digits weights
}


def test_every_chapter_has_expectations():
    chapters = {p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb")}
    assert chapters == set(CHAPTERS), "add the new chapter to CHAPTERS in tests/test_browser.py"


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_chapter_shows_math_figures_and_collapsed_solutions(server, browser, chapter):
    expected = CHAPTERS[chapter]
    page, errors, _ = _open(browser, server, f"book/{chapter}.html")
    assert not errors, errors
    assert page.locator("mjx-container").count() >= expected["math"], f"{chapter} should typeset its equations"
    figures = page.locator("article img")
    wide = sum(figures.nth(i).evaluate("img => img.naturalWidth > 100") for i in range(figures.count()))
    assert wide >= expected["figures"], f"{chapter} should show its figures ({wide} found)"
    if "explorer_images" in expected:  # an explorer's static fallback: pre-rendered figures, all loaded
        loaded = page.locator("div.course-explorer img").evaluate_all(
            "imgs => imgs.map(img => img.complete && img.naturalWidth > 100)")
        assert loaded == [True] * expected["explorer_images"], f"{chapter}: explorer fallback images {loaded}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{chapter}.png"), full_page=True)
    page.screenshot(path=str(SCREENSHOTS / f"{chapter}_top.png"))
    # Solutions are sphinx-exercise "dropdown" admonitions, collapsed by sphinx-togglebutton:
    # the title is shown, the reference code is not until the reader opens it.
    solutions = page.locator("div.solution.dropdown")
    assert solutions.count() >= expected["solutions"]
    for i in range(solutions.count()):
        assert solutions.nth(i).locator(".admonition-title").is_visible()
        assert not solutions.nth(i).locator("div.highlight").first.is_visible()
    expect = pytest.importorskip("playwright.sync_api").expect  # waits for the toggle's animation
    solutions.first.locator("button.toggle-button").click()
    expect(solutions.first.locator("div.highlight").first).to_be_visible()  # a solution opens on click
    solutions.first.locator("button.toggle-button").click()
    expect(solutions.first.locator("div.highlight").first).to_be_hidden()
    page.close()


@pytest.fixture(scope="module")
def colab_preview(book_html, tmp_path_factory):
    """Chapter 1's Colab edition, exported by Jupyter's own HTML exporter (nbconvert, lab
    template) with MathJax served locally, on a server of its own."""
    import nbformat
    from nbconvert import HTMLExporter

    from course_lib.editions.colab import colab_notebook
    from course_lib.editions.project import Book

    folder = tmp_path_factory.mktemp("colab_preview")
    (folder / "mathjax").symlink_to(book_html / "_static" / "mathjax")
    chapter = ROOT / "book" / "01_score_function.ipynb"
    nb = colab_notebook(nbformat.read(chapter, as_version=4), Book.at(ROOT), "book/01_score_function")
    exporter = HTMLExporter(template_name="lab", mathjax_url="mathjax/tex-mml-chtml.js")
    page = exporter.from_notebook_node(nb)[0]
    # the template configures MathJax 2 (from a CDN); the book ships MathJax 3: the same delimiters
    config = ("<script>window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], "
              "displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']], processEscapes: true}};</script>")
    assert page.count('<script src="mathjax/tex-mml-chtml.js">') == 1
    page = page.replace('<script src="mathjax/tex-mml-chtml.js">', config + '<script src="mathjax/tex-mml-chtml.js">')
    (folder / "chapter.html").write_text(page)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_colab_edition_shows_exercises_math_and_citations_as_formatted_text(colab_preview, browser):
    page, errors, external = _open(browser, colab_preview, "chapter.html")
    text = page.inner_text("body")
    assert page.locator("mjx-container").count() >= 20, "the Colab edition's math should typeset"
    assert page.locator("strong", has_text="Exercise 1").count() == 1
    assert page.locator("strong", has_text="Definition 1").count() == 1
    assert "Hyvärinen (2005)" in text and "Aapo Hyvärinen. Estimation of non-normalized" in text
    assert not re.search(r"\{(footcite|doc|exercise|prf:|solution|note)", text), "MyST left in the page"
    details = page.locator("details")
    assert details.count() == 3 and not details.first.locator("p").first.is_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("strong", has_text="Exercise 1").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "colab_01_score_function_exercises.png"))
    page.screenshot(path=str(SCREENSHOTS / "colab_01_score_function.png"), full_page=True)
    details.first.locator("summary").click()
    assert details.first.locator("p").first.is_visible()  # a solution opens on click
    page.close()
