"""Serve MathJax 3 from the built book itself, so math typesets with no network.

The MathJax files come from the `django-static-mathjax` package (a pip-installable copy of
MathJax 3). Only what the CommonHTML TeX renderer loads is copied into `_static/mathjax/`
of the HTML output; `mathjax_path` is pointed there.
"""

from pathlib import Path
import shutil

ENTRY = "tex-mml-chtml.js"
# Components tex-mml-chtml.js can load at run time: TeX extensions, the CHTML fonts,
# the context menu and its accessibility helpers.
KEEP = ("input", "output", "ui", "a11y", "adaptors", ENTRY)


def _mathjax_dir() -> Path:
    import mathjax  # provided by django-static-mathjax

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (es5 / ENTRY).is_file():
        raise RuntimeError(f"MathJax entry point {ENTRY} not found under {es5}")
    return es5


def _point_to_local_copy(app, config):
    config.mathjax_path = f"mathjax/{ENTRY}"


def _copy_mathjax(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source = _mathjax_dir()
    target = Path(app.outdir) / "_static" / "mathjax"
    for name in KEEP:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("svg", "svg.js"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)


def setup(app):
    _mathjax_dir()  # fail early, with a clear message, if MathJax is not installed
    app.connect("config-inited", _point_to_local_copy)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
