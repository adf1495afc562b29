"""The chapters run in JupyterLab (`make lab`), with the book's markup rendered by
jupyterlab-myst: JupyterLab headless from the project's environment, driven by the same
headless Chromium as the book's browser test (tests/test_browser.py), offline."""

import ast
import builtins
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse

import nbformat
import pytest

from conftest import ROOT
from test_browser import SCREENSHOTS, browser  # noqa: F401 (the book's Chromium fixture)

pytestmark = pytest.mark.browser

CONFIG = ROOT / "lab" / "jupyter_server_config.py"
CHAPTER_1, CHAPTER_2 = "01_score_function.ipynb", "02_langevin_dynamics.ipynb"
STARTUP_S, RUN_S = 120, 300  # generous: the 2-core CI machine runs other tests' kernels too

# The book's markup that jupyterlab-myst does not know (README.md, "Run the chapters in
# JupyterLab"): it shows an "Unknown Directive" box where the book lists the references.
UNSUPPORTED_DIRECTIVES = {"footbibliography"}
# A JupyterLab extension built for another JupyterLab release warns so on the console
# before failing in odd ways (jupyterlab-myst 2.7.0 with JupyterLab 4.6, for instance).
VERSION_SKEW = re.compile(r"[Uu]nsatisfied version|No satisfying version|not compatible")


def _status(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a copy of chapters 1 and 2 (so nothing is saved into book/), on a free
    port with a token, in the `ci` profile; shut down at the end, whatever happened."""
    tmp = tmp_path_factory.mktemp("lab")
    root, runtime = tmp / "book", tmp / "runtime"
    root.mkdir()
    for name in (CHAPTER_1, CHAPTER_2):
        shutil.copy(ROOT / "book" / name, root / name)
    # A fresh user profile: no workspace to restore, no user settings; every cell in the DOM
    # (JupyterLab otherwise only renders the cells near the viewport).
    settings = tmp / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    token = os.urandom(16).hex()
    # One thread per kernel unless told otherwise: this shares two cores with the rest of the
    # suite, and OpenMP threads spinning on a busy machine are much slower than one thread
    # (chapter 2's explorer: 13 s with one thread, 200 s with two, at a load of 12).
    env = dict({"OMP_NUM_THREADS": "1"}, **os.environ)
    env.update(COURSE_PROFILE="ci", JUPYTER_RUNTIME_DIR=str(runtime),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"))
    cmd = [sys.executable, "-m", "jupyterlab", f"--config={CONFIG}", "--no-browser",
           "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True"]
    cmd += ["--allow-root"] if os.geteuid() == 0 else []
    log = open(tmp / "server.log", "w")
    start, url = time.monotonic(), None
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    try:
        url = _wait_until_ready(server, runtime, token, tmp / "server.log")
        print(f"JupyterLab ready in {time.monotonic() - start:.1f} s")
        yield {"url": url, "token": token, "root": root}
    finally:
        _shut_down(server, url, token)
        log.close()
    assert server.returncode is not None, "JupyterLab did not stop"


def _wait_until_ready(server, runtime, token, log):
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        info = runtime / f"jpserver-{server.pid}.json"  # written once the port is bound
        if info.exists():
            url = f"http://127.0.0.1:{json.loads(info.read_text())['port']}"
            try:
                if _status(f"{url}/api/status?token={token}") == 200:
                    return url
            except OSError:
                pass
        time.sleep(0.25)
    pytest.fail(f"JupyterLab not ready after {STARTUP_S} s:\n{log.read_text()[-3000:]}")


def _shut_down(server, url, token):
    """Ask the server to stop (it shuts its kernels down), then insist."""
    if url and server.poll() is None:
        try:
            request = urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=10)
        except OSError:
            pass
    for stop in (lambda: None, server.terminate, server.kill):
        stop()
        try:
            server.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def lab_page(lab, browser):  # noqa: F811
    """A fresh page; every request to a host other than the server is recorded and refused."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, external = [], []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("console", lambda msg: (msg.type == "error" or VERSION_SKEW.search(msg.text))
            and errors.append(f"console: {msg.text}"))

    def route(r):
        if urlparse(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    yield page, errors, external
    page.close()


def _open_notebook(page, lab, name):
    page.goto(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}")
    page.wait_for_function(f"""() => {{
        const w = window.jupyterapp && jupyterapp.shell.currentWidget;
        return w && w.context && w.context.path === {json.dumps(name)} && w.sessionContext.session
            && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === "idle"
            && w.content.widgets.length > 0; }}""", timeout=STARTUP_S * 1000)
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")


# The kernel is idle and every code cell (or those listed) has run, or one failed (which
# stops Run All).
RUN_FINISHED = """cells => {
    const panel = jupyterapp.shell.currentWidget, all = panel.content.widgets;
    const code = cells ? cells.map(i => all[i]) : all.filter(c => c.model.type === "code");
    const failed = code.some(c => c.model.outputs.toJSON().some(o => o.output_type === "error"));
    const done = code.every(c => c.model.executionCount !== null);
    return panel.sessionContext.session.kernel.status === "idle" && (done || failed);
}"""

CELL_ERRORS = """() => jupyterapp.shell.currentWidget.content.widgets.flatMap((c, i) =>
    c.model.type !== "code" ? [] : c.model.outputs.toJSON()
        .filter(o => o.output_type === "error").map(o => `cell ${i}: ${o.ename}: ${o.evalue}`))"""

KERNEL_PRINTS = """async code => {
    const future = jupyterapp.shell.currentWidget.sessionContext.session.kernel.requestExecute({code});
    const out = [];
    future.onIOPub = msg => msg.header.msg_type === "stream" && out.push(msg.content.text);
    await future.done;
    return out.join("");
}"""


def test_chapter_1_runs_in_jupyterlab_with_the_books_markup_rendered(lab, lab_page):
    page, errors, external = lab_page
    start = time.monotonic()
    panel = _open_notebook(page, lab, CHAPTER_1)
    opened_s = time.monotonic() - start
    page.evaluate("() => { jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function(RUN_FINISHED, arg=None, timeout=RUN_S * 1000, polling=500)
    print(f"chapter 1: open {opened_s:.1f} s, run all {time.monotonic() - start - opened_s:.1f} s")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    panel.locator(".jp-OutputArea-output img").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "lab_01_score_function.png"))  # a figure, run

    assert page.evaluate(CELL_ERRORS) == []
    outputs = panel.locator(".jp-OutputArea-output").all_inner_texts()
    assert any(t.startswith("size profile: ci") for t in outputs)
    assert panel.locator(".jp-OutputArea-output img").count() >= 3  # the chapter's figures
    # the kernel is the project's environment, with this checkout's course_lib (editable)
    where = page.evaluate(KERNEL_PRINTS, "import sys, course_lib; print(sys.prefix); "
                                         "print(course_lib.__file__)").split()
    assert where == [sys.prefix, str(ROOT / "course_lib" / "__init__.py")]

    # An exercise block is rendered as one, not as a fenced code block showing the markup.
    cell = panel.locator(".jp-MarkdownCell", has_text="The score of a Gaussian")
    assert cell.count() == 1
    assert cell.locator("pre").count() == 0, "the exercise shows as a fenced code block"
    exercise = cell.locator("aside.myst-exercise")
    assert exercise.count() == 1, "the exercise is not rendered as one"
    assert exercise.locator(".myst-exercise-title").inner_text() == "Exercise 1 (The score of a Gaussian)"
    assert "gaussian_score" in exercise.locator(".myst-exercise-body").inner_text()
    rendered = panel.locator(".jp-MarkdownCell .myst")
    assert rendered.count() == panel.locator(".jp-MarkdownCell").count()  # all through MyST
    assert not any("{exercise}" in t or "{solution-start}" in t for t in rendered.all_inner_texts())
    # the definition and the note, and the solution collapsed under its title
    assert panel.locator("aside.myst-proof .myst-proof-title", has_text="Definition 1").count() == 1
    assert panel.locator("aside.myst-admonition-note").count() >= 1
    solution = panel.locator("details.myst-exercise", has_text="Solution to").first
    assert solution.get_attribute("open") is None
    assert solution.inner_text().replace("\xa0", " ") == "Start of Solution to Exercise 1"
    exercise.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "lab_01_score_function_exercise.png"))

    # The math is typeset (KaTeX), with no error and no TeX delimiter left in the text.
    assert panel.locator(".jp-MarkdownCell .katex").count() >= 100
    assert panel.locator(".jp-MarkdownCell .katex-error").count() == 0
    leftover = rendered.evaluate_all("""cells => cells.map(c => {
        const copy = c.cloneNode(true);
        copy.querySelectorAll("code, pre, .katex").forEach(e => e.remove());
        return copy.textContent; }).filter(t => /\\$|\\\\\\(|\\\\\\[/.test(t))""")
    assert leftover == []
    unknown = {t.split(" - ")[0].strip() for t in rendered.all_inner_texts()
               for t in t.splitlines() if t.endswith("Unknown Directive")}
    assert unknown <= UNSUPPORTED_DIRECTIVES, f"markup jupyterlab-myst does not render: {unknown}"

    # Saving the run notebook writes it back as the repository stores it: cells, no outputs,
    # the chapter's own kernel metadata (lab/jupyter_server_config.py).
    page.evaluate("() => jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => !jupyterapp.shell.currentWidget.context.model.dirty")
    saved = json.loads((lab["root"] / CHAPTER_1).read_text())
    assert saved == json.loads((ROOT / "book" / CHAPTER_1).read_text())

    assert not errors, errors
    assert not external, external


def _cells_needed_by(notebook, target):
    """Indices of the code cells that cell `target` needs, by the names each defines and uses:
    for every name it uses, the last earlier cell assigning it, and so on back (a few cells of
    chapter 2 instead of its whole first half)."""
    def names(cell):
        """(names the cell binds, names it takes from earlier cells)"""
        lines = [line for line in cell.source.splitlines() if not line.lstrip().startswith("%")]
        nodes = list(ast.walk(ast.parse("\n".join(lines))))
        loaded = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        stored = {n.id for n in nodes if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
        stored |= {n.name for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        stored |= {n.arg for n in nodes if isinstance(n, ast.arg)}  # parameters
        stored |= {(a.asname or a.name).split(".")[0] for n in nodes
                   if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        return stored, loaded - stored - set(dir(builtins))

    cells = notebook.cells
    needed, chosen = names(cells[target])[1], {target}
    for i in range(target - 1, -1, -1):
        if cells[i].cell_type != "code":
            continue
        stored, loaded = names(cells[i])
        if stored & needed:
            chosen.add(i)
            needed = (needed - stored) | loaded
    assert not needed, f"cell {target} uses names no earlier cell defines: {needed}"
    return sorted(chosen)


@pytest.mark.slow  # about a minute more, most of it the explorer's static grid of 18 figures
def test_chapter_2_explorer_is_live_in_jupyterlab(lab, lab_page):
    page, errors, external = lab_page
    notebook = nbformat.read(lab["root"] / CHAPTER_2, as_version=4)
    target = next(i for i, c in enumerate(notebook.cells)
                  if c.cell_type == "code" and "widgets.explorer(" in c.source)
    cells = _cells_needed_by(notebook, target)
    start = time.monotonic()
    panel = _open_notebook(page, lab, CHAPTER_2)
    page.evaluate("""async cells => {
        const notebook = jupyterapp.shell.currentWidget.content;
        for (const i of cells) {
            notebook.activeCellIndex = i;
            await jupyterapp.commands.execute("notebook:run-cell");
        } }""", cells)
    page.wait_for_function(RUN_FINISHED, arg=cells, timeout=RUN_S * 1000, polling=500)
    assert page.evaluate(CELL_ERRORS) == []
    output = panel.locator(".jp-Cell").nth(target).locator(".jp-OutputArea-output").first
    sliders = output.locator(".widget-hslider")
    sliders.first.wait_for(timeout=60_000)
    print(f"chapter 2: cells {cells} and the explorer in {time.monotonic() - start:.1f} s")
    # the live view: two sliders (step size, steps), a checkbox (noise), one figure
    assert sliders.count() == 2 and output.locator(".widget-checkbox").count() == 1
    assert output.locator(".course-explorer").count() == 0, "the static fallback is shown"
    figure = output.locator(".widget-output img")
    figure.wait_for()
    before = figure.get_attribute("src")
    sliders.first.locator(".noUi-handle").press("ArrowRight")  # step size 0.03 -> 0.1
    page.wait_for_function("""([node, before]) => {
        const img = node.querySelector(".widget-output img");
        return img && img.getAttribute("src") !== before; }""",
                           arg=[output.element_handle(), before], timeout=60_000)
    output.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "lab_02_langevin_dynamics_explorer.png"))
    assert "0.1" in sliders.first.inner_text()
    assert output.locator(".widget-output img").get_attribute("src") != before
    assert not errors, errors
    assert not external, external
