"""The Colab path, end to end (slow: `pytest -m slow`, see README.md).

A fresh virtual environment gets only the pinned torch and what Colab preinstalls; the Colab
edition's own bootstrap cell then installs course_lib the way it does in Colab, from a wheel
built from this checkout instead of the network; and every Colab-edition chapter of the book
runs top to bottom in a kernel of that environment, at the `ci` size."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course_lib.editions import bootstrap
from course_lib.editions.colab import colab_notebook
from course_lib.editions.project import Book

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BOOK = Book.at(ROOT)
# Colab's preinstalled packages that course_lib needs (torch apart, pinned by constraints.txt)
COLAB_PREINSTALLED = ["numpy", "scipy", "matplotlib", "scikit-learn", "tqdm", "einops", "ipywidgets",
                      "ipykernel", "nbformat"]


def _run(*cmd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def colab_like(tmp_path_factory):
    """(python of the fresh environment, the wheel, the kernel spec folder)."""
    tmp = tmp_path_factory.mktemp("colab")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", ROOT)
    [wheel] = (tmp / "dist").glob("course_lib-*.whl")
    _run(sys.executable, "-m", "venv", tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", "torch")
    _run(python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", *COLAB_PREINSTALLED)
    spec = tmp / "kernels" / "kernels" / "colab-like"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "colab-like", "language": "python"}))
    return python, wheel, tmp / "kernels"


def _torch_version(python):
    return _run(python, "-c", "import torch; print(torch.__version__)").strip()


CHAPTERS = [p for p in BOOK.chapters if BOOK.docname(p) in BOOK.docnames]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_colab_edition_runs_top_to_bottom_in_a_colab_like_environment(colab_like, chapter, tmp_path):
    from nbclient import NotebookClient

    python, wheel, kernels = colab_like
    torch_before = _torch_version(python)
    nb = colab_notebook(nbformat.read(chapter, as_version=4), BOOK, BOOK.docname(chapter))
    assert nb.cells[0].source == bootstrap.edition_cell(BOOK).source  # the published cell, then:
    nb.cells[0] = bootstrap.edition_cell(BOOK, str(wheel))  # the same cell, pointed at the local wheel
    env = {**os.environ, "COURSE_PROFILE": "ci", "JUPYTER_PATH": str(kernels)}
    start = time.perf_counter()
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(kernels)  # where the client looks up the kernel spec
    try:
        NotebookClient(nb, timeout=900, kernel_name="colab-like",
                       resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    finally:
        os.environ.pop("JUPYTER_PATH") if old is None else os.environ.update(JUPYTER_PATH=old)
    print(f"{chapter.name}: {time.perf_counter() - start:.0f} s in the Colab-like environment")
    assert _torch_version(python) == torch_before, "installing course_lib must keep the preinstalled torch"
    assert "Correct:" in "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
