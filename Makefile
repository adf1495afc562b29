# Three commands for a fresh machine (see README.md):
#   make book   create the environment if needed, then build the HTML book with every chapter executed
#   make test   the whole test suite: unit tests, every notebook (nbval), the book build, the browser test
#   make lab    JupyterLab on book/, to run the chapters with the course's kernel

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: book test test-slow env chromium lab student colab book-no-solutions clean

env: $(STAMP)

# torch is installed first, pinned to the CPU build, so no dependency pulls the CUDA wheels.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps -e .
	touch $@

# From scratch (--all) with warnings as errors (-W): an incremental build would hide warnings.
book: env
	$(BIN)/jupyter-book build . --all -W -n --keep-going
	@echo "The book is in _build/html/index.html"

# Headless Chromium for the browser test, from Debian's packages (needs root, as on CI).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: env chromium
	COURSE_PROFILE=ci $(BIN)/python -m pytest

# JupyterLab on the chapters, with the course's kernel: this .venv, where course_lib is installed
# editable, so a library edit shows after a kernel restart. lab/jupyter_server_config.py keeps it
# offline and saves notebooks without outputs. The student edition: make student lab LAB_DIR=student/book.
# More options: make lab LAB_ARGS="--port=9999 --no-browser".
LAB_DIR  ?= book
LAB_ARGS ?=
lab: env
	$(BIN)/jupyter lab --config=lab/jupyter_server_config.py --ServerApp.root_dir=$(LAB_DIR) \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The slow tests: the student edition under nbval and the Colab path in a fresh venv (README.md).
test-slow: env
	COURSE_PROFILE=ci $(BIN)/python -m pytest -m slow

# Editions of every chapter (course_lib.editions; see book/instructors.md).
student: env
	$(BIN)/python -m course_lib.cli student --out student

colab: env
	$(BIN)/python -m course_lib.cli colab --out colab

# The HTML book with no solution anywhere, from the executed chapters of `make book`.
book-no-solutions: env
	$(BIN)/python -m course_lib.cli book --no-solutions --executed _build/jupyter_execute --out _build/no-solutions

clean:
	rm -rf _build student colab
