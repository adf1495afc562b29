"""The page's notebook download is the Colab edition, not the MyST source.

sphinx-book-theme's download button links to the page's source under `_sources/`. When the build
finishes, each chapter's copy there is replaced by its Colab edition (`course_lib.editions`),
the notebook that renders in plain Jupyter and Colab. The build without solutions sets
`course_downloads` to a folder of student-edition notebooks, which are copied instead.
"""

import shutil
from pathlib import Path


def _replace_downloads(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    import nbformat

    from course_lib.editions.colab import colab_notebook
    from course_lib.editions.project import Book

    prepared = app.config.course_downloads
    book = None if prepared else Book.at(app.srcdir)
    for docname in sorted(app.env.found_docs):
        source, target = Path(app.srcdir) / f"{docname}.ipynb", Path(app.outdir) / "_sources" / f"{docname}.ipynb"
        if not (source.is_file() and target.is_file()):
            continue
        if prepared:
            shutil.copyfile(Path(prepared) / f"{docname}.ipynb", target)
        else:
            nbformat.write(colab_notebook(nbformat.read(source, as_version=4), book, docname), target)


def setup(app):
    app.add_config_value("course_downloads", "", "html")
    app.connect("build-finished", _replace_downloads)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
