"""Shared test setup: the `ci` size profile, the HTML book built once per session, and one
torch thread for tests that compare an in-process run with a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Every chapter (executed by nbval or by the book build) runs at CI size unless told otherwise.
os.environ.setdefault("COURSE_PROFILE", "ci")

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "_build" / "test"


@pytest.fixture(scope="session")
def book_build():
    """Build the HTML book from scratch, warnings as errors; return (returncode, log, html_dir)."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(ROOT), "--all", "-W", "-n", "--keep-going",
           "--path-output", str(BUILD_DIR)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
    return proc.returncode, proc.stdout + proc.stderr, BUILD_DIR / "_build" / "html"


@pytest.fixture(scope="session")
def book_html(book_build):
    """The built HTML folder; skips dependants (the build test itself reports the failure)."""
    returncode, _, html = book_build
    if returncode != 0:
        pytest.fail("the book build failed; see test_book_builds_without_warnings")
    return html


@pytest.fixture
def one_thread():
    """One torch thread, as the subprocesses of the CLI and torchrun tests (OMP_NUM_THREADS=1):
    with both cores, as under `make test`, a reduction sums in another order and the runs differ."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
