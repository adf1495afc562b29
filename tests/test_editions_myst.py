"""MyST -> plain Jupyter Markdown (course_lib.editions.myst), on a small book made here and on
every chapter of the real one."""

import shutil
from pathlib import Path

import nbformat
import pytest

from course_lib.editions import myst
from course_lib.editions.project import Book

ROOT = Path(__file__).resolve().parents[1]

INTRO = "# Welcome\n\nNothing numbered here.\n"
FIRST = """# First chapter

```{prf:definition} Score
:label: def-score

The score is $\\nabla_x \\log p$ {footcite:p}`hyvarinen2005`.
```

```{exercise} Warm-up
:label: ex-warm

Write `f`.
```

```{exercise} Unnumbered
:nonumber:

Think.
```
"""
SECOND = """# Second chapter

(sec-intro)=
## Introduction

As {footcite:t}`song2019generative` and {footcite:t}`song2021scoresde` showed, see {doc}`first`
and {ref}`def-score`, {numref}`ex-warm`, {ref}`sec-intro` and {prf:ref}`def-score`. Keep
`{footcite:t}` in code and $a_{1}$ in math. A role in math text: {math}`\\alpha`.

% a comment the reader must not see

```{exercise} Second
:label: ex-second

Use {footcite:p}`hyvarinen2005,vincent2011`.
```

:::{note}
A note with $x$.
:::

```{warning}
Careful.
```

$$
e = mc^2
$$ (eq-energy)

Equation {eq}`eq-energy`.

## References

```{footbibliography}
```
"""


@pytest.fixture
def book(tmp_path):
    shutil.copy(ROOT / "_config.yml", tmp_path)
    shutil.copy(ROOT / "references.bib", tmp_path)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: first\n  - file: second\n")
    for name, text in (("intro", INTRO), ("first", FIRST), ("second", SECOND)):
        (tmp_path / f"{name}.md").write_text(text)
    return Book.at(tmp_path)


def test_numbers_follow_the_book_one_counter_per_kind(book):
    first = myst.Converter(book, "first").convert(FIRST)
    second = myst.Converter(book, "second").convert(SECOND)
    assert "**Definition 1** (Score)" in first
    assert "**Exercise 1** (Warm-up)" in first and "**Exercise** (Unnumbered)" in first
    assert "**Exercise 2** (Second)" in second  # the counter runs on across chapters


def test_citations_become_author_year_with_a_reference_list(book):
    out = myst.Converter(book, "second").convert(SECOND)
    assert "As Song and Ermon (2019) and Song et al. (2021) showed" in out
    assert "Use (Hyvärinen, 2005; Vincent, 2011)." in out
    references = out.split("## References", 1)[1]
    order = [references.index(name) for name in ("Yang Song and Stefano Ermon", "Jascha Sohl-Dickstein",
                                                 "Aapo Hyvärinen", "Pascal Vincent")]
    assert order == sorted(order), "entries are listed in the order they are first cited"
    assert "<em>Neural Computation</em>" in references


def test_links_point_at_the_published_pages(book):
    out = myst.Converter(book, "second").convert(SECOND)
    pages = book.pages_url
    assert f"see [First chapter]({pages}/first.html)" in out
    assert f"[Definition 1]({pages}/first.html#def-score)" in out
    assert f"[Exercise 1]({pages}/first.html#ex-warm)" in out
    assert f"[Introduction]({pages}/second.html#sec-intro)" in out
    assert f"Equation [(1)]({pages}/second.html#equation-eq-energy)." in out


def test_admonitions_math_code_and_comments(book):
    out = myst.Converter(book, "second").convert(SECOND)
    assert "> **Note**\n>\n> A note with $x$." in out
    assert "> **Warning**\n>\n> Careful." in out
    assert "$$\ne = mc^2\n$$" in out and "(eq-energy)" not in out
    assert "`{footcite:t}` in code and $a_{1}$ in math" in out  # untouched
    assert "$\\alpha$" in out
    assert "comment" not in out and "(sec-intro)=" not in out
    assert myst.leftovers(book, out) == []


def test_unknown_markup_is_an_error_naming_the_document(book):
    converter = myst.Converter(book, "second")
    with pytest.raises(myst.ConversionError, match="second: the role {term} has no plain-Markdown"):
        converter.convert("A {term}`score`.")
    with pytest.raises(myst.ConversionError, match="second: the directive {figure}"):
        converter.convert("```{figure} a.png\n```\n")
    with pytest.raises(myst.ConversionError, match="'nokey' is not in references.bib"):
        converter.convert("{footcite:t}`nokey`")
    with pytest.raises(myst.ConversionError, match="no label 'nowhere'"):
        converter.convert("{ref}`nowhere`")


def test_leftovers_finds_what_survives(book):
    found = myst.leftovers(book, "```{note}\nx\n```\n\nA {doc}`x` role.\n\n(t)=\n# T\n")
    assert found == ["directive {note}", "role {doc}`x`", "target (t)="]


@pytest.mark.parametrize("chapter", sorted(p.name for p in (ROOT / "book").glob("*.ipynb")))
def test_every_chapter_converts_without_leftovers(chapter):
    book = Book.at(ROOT)
    path = ROOT / "book" / chapter
    converter = myst.Converter(book, book.docname(path))
    from course_lib.editions.exercises import is_solution_marker

    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown" and not is_solution_marker(book, cell):
            out = converter.convert(cell.source)
            assert myst.leftovers(book, out) == [], f"{chapter}: MyST left in\n{out}"
