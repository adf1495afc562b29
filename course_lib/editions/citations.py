"""Citations for plain Markdown: "Author (year)" in the text and a reference list, from the
book's `references.bib`, formatted by pybtex (which sphinxcontrib-bibtex uses in the HTML book).
"""

from __future__ import annotations

import functools
from pathlib import Path

from pybtex.backends import html
from pybtex.database import parse_file
from pybtex.plugin import find_plugin
from pybtex.richtext import Text

# the roles' suffixes: textual "Author (year)" or parenthetical "(Author, year)"; "s" lists all authors
TEXTUAL, PARENTHETICAL = ("t", "ts"), ("p", "ps", "")


class _InlineHTML(html.Backend):
    """pybtex's HTML output with no <span> around protected text and plain spaces: inline
    HTML that Jupyter's and Colab's Markdown renderers both accept."""

    symbols = {**html.Backend.symbols, "nbsp": " "}

    def format_protected(self, text):
        return text


class Bibliography:
    """The entries of a .bib file, and the two renderings the editions need."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries = parse_file(str(self.path)).entries

    def _entry(self, key: str):
        if key not in self.entries:
            raise KeyError(f"citation key {key!r} is not in {self.path.name}")
        return self.entries[key]

    def authors(self, key: str, full: bool = False) -> str:
        """"Hyvärinen", "Song and Ermon", "Song et al." (every name with full=True)."""
        entry = self._entry(key)
        people = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [Text.from_latex(" ".join(p.prelast_names + p.last_names)).render_as("text") for p in people]
        if not names:
            return Text.from_latex(entry.fields.get("title", key)).render_as("text")
        if len(names) > 2 and not full:
            return f"{names[0]} et al."
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    def year(self, key: str) -> str:
        return self._entry(key).fields.get("year", "n.d.")

    def cite(self, keys: list[str], suffix: str) -> str:
        """The text of a `{footcite:<suffix>}` or `{cite:<suffix>}` role citing `keys`."""
        full = suffix.endswith("s")
        if suffix in TEXTUAL:
            return ", ".join(f"{self.authors(k, full)} ({self.year(k)})" for k in keys)
        if suffix in PARENTHETICAL:
            return "(" + "; ".join(f"{self.authors(k, full)}, {self.year(k)}" for k in keys) + ")"
        raise ValueError(f"citation style {suffix!r} is not supported (use t, p, ts or ps)")

    @functools.cached_property
    def _style(self):
        return find_plugin("pybtex.style.formatting", "unsrt")()

    def reference(self, key: str) -> str:
        """One formatted entry, as inline HTML on one line."""
        [formatted] = self._style.format_entries([self._entry(key)])
        return " ".join(formatted.text.render(_InlineHTML()).split())

    def reference_list(self, keys: list[str]) -> str:
        """A Markdown list of the entries, in the order given."""
        return "\n".join(f"- {self.reference(k)}" for k in keys)
