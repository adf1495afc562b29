"""MyST markup -> plain Jupyter Markdown, which Colab and Jupyter render.

The text is parsed with markdown-it-py configured exactly as MyST configures it for the book
(`myst_parser`'s own parser, with the extensions `_config.yml` enables), and only the spans the
parser reports as MyST are rewritten: directive fences (by their source lines), roles (by their
literal text, found in order within their block), targets and comments. Everything else is
kept byte for byte, so math, code and plain Markdown pass through untouched.

- `{exercise}` and `{prf:*}` blocks become a bold numbered heading ("**Exercise 4** (Title)")
  and their text, numbered as the HTML book numbers them (one counter per kind over the book in
  table-of-contents order, which is what Sphinx's numfig does without numbered sections);
- admonitions become blockquotes; `{math}` and labelled `$$` blocks become `$$` blocks;
- `{footcite:t}` / `{footcite:p}` (and `{cite:*}`) become "Author (year)" / "(Author, year)",
  and `{footbibliography}` the list of the entries cited since the last one;
- `{doc}`, `{ref}`, `{numref}`, `{prf:ref}` and `{eq}` become links to the published pages.

Anything else is a `ConversionError` naming the document and the construct, so a chapter that
uses new markup fails the tests instead of reaching students as raw text.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter

from docutils.parsers.rst import Directive, directives

from .project import Book, Target

PROOF_KINDS = ("axiom", "theorem", "lemma", "algorithm", "definition", "remark", "conjecture",
               "corollary", "criterion", "example", "property", "observation", "proposition",
               "assumption", "notation")
ENUMERATED = ("exercise",) + tuple(f"prf:{kind}" for kind in PROOF_KINDS)
ADMONITIONS = ("note", "warning", "tip", "hint", "important", "caution", "attention", "danger",
               "error", "seealso", "admonition")
SOLUTION_MARKERS = ("solution-start", "solution-end")


class ConversionError(ValueError):
    """MyST markup that the plain-Markdown editions cannot render."""


class _WithTitle(Directive):
    option_spec = {k: directives.unchanged for k in ("label", "class", "nonumber", "name", "hidden", "all")}
    has_content, optional_arguments, final_argument_whitespace = True, 1, True


class _Untitled(_WithTitle):
    optional_arguments = 0


@functools.lru_cache(maxsize=None)
def _parser(extensions: tuple[str, ...]):
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    return create_md_parser(MdParserConfig(enable_extensions=set(extensions)), RendererHTML)


def parse(book: Book, text: str):
    """markdown-it tokens of `text`, as MyST parses it for this book."""
    extensions = tuple(sorted((book.config.get("parse") or {}).get("myst_enable_extensions", [])))
    return _parser(extensions).parse(text)


def directive_name(token) -> str | None:
    """The directive a fence token opens (`{note}` -> "note"), or None for a plain fence."""
    if token.type not in ("fence", "colon_fence") or not token.info.startswith("{"):
        return None
    return token.info[1:].split("}", 1)[0]


@dataclasses.dataclass(frozen=True)
class DirectiveText:
    name: str
    argument: str
    options: dict
    body: str


def read_directive(token) -> DirectiveText:
    name = directive_name(token)
    first_line = token.info.split("}", 1)[1].strip()
    kind = _Untitled if name in ADMONITIONS[:-1] else _WithTitle
    from myst_parser.parsers.directives import parse_directive_text

    result = parse_directive_text(kind, first_line, token.content.rstrip("\n"))
    if result.warnings:
        raise ConversionError(f"{{{name}}}: {result.warnings[0].msg}")
    return DirectiveText(name, " ".join(result.arguments), result.options, "\n".join(result.body))


def heading_text(inline) -> str:
    """The plain text of a heading's inline token (math kept as $...$)."""
    parts = []
    for child in inline.children or []:
        if child.type == "math_inline":
            parts.append(f"${child.content}$")
        elif child.type in ("text", "code_inline"):
            parts.append(child.content)
    return "".join(parts).strip()


def _title(kind: str) -> str:
    return kind.split(":")[-1].capitalize()


class BookIndex:
    """The HTML book's numbers (per kind, over the book) and every label's target."""

    def __init__(self):
        self.numbers: dict[tuple[str, str, int], int | None] = {}  # (docname, kind, k-th) -> number
        self.targets: dict[str, Target] = {}
        self.titles: dict[str, str] = {}

    @classmethod
    def build(cls, book: Book) -> "BookIndex":
        index, counters = cls(), Counter()
        for docname in book.docnames:
            seen, equations = Counter(), Counter()
            for text in book.markdown_sources(docname):
                index._scan(book, docname, parse(book, text), counters, seen, equations)
        return index

    def _scan(self, book, docname, tokens, counters, seen, equations):
        pending = None  # a (label)= target waiting for its heading
        for i, token in enumerate(tokens):
            if token.type == "myst_target":
                pending = token.content
            elif token.type == "heading_open":
                text = heading_text(tokens[i + 1])
                if token.tag == "h1":
                    self.titles.setdefault(docname, text)
                if pending:
                    self.targets[pending] = Target(docname, pending, text)
                pending = None
            elif token.type == "math_block_label":
                equations[docname] += 1
                self.targets[token.info] = Target(docname, f"equation-{token.info}", f"({equations[docname]})")
            elif (name := directive_name(token)) is not None:
                d = read_directive(token)
                if name in ENUMERATED:
                    seen[name] += 1
                    number = None
                    if "nonumber" not in d.options:
                        counters[name] += 1
                        number = counters[name]
                    self.numbers[(docname, name, seen[name])] = number
                    if "label" in d.options:
                        self.targets[d.options["label"]] = Target(docname, d.options["label"], f"{_title(name)} {number}")
                elif name == "math" and "label" in d.options:
                    equations[docname] += 1
                    label = d.options["label"]
                    self.targets[label] = Target(docname, f"equation-{label}", f"({equations[docname]})")
                self._scan(book, docname, parse(book, d.body), counters, seen, equations)


class Converter:
    """Converts the Markdown of one document, cell after cell, in order."""

    def __init__(self, book: Book, docname: str):
        from .citations import Bibliography

        self.book, self.docname, self.index = book, docname, book.index
        self.bibliography = Bibliography(book.root / "references.bib")
        self.seen = Counter()  # enumerated directives met so far, per kind
        self.cited: list[str] = []  # citations since the last {footbibliography}
        self.cited_any = False

    def error(self, what: str) -> ConversionError:
        return ConversionError(f"{self.docname}: {what}")

    def convert(self, text: str) -> str:
        lines = text.splitlines(keepends=True)
        edits = []  # (first line, end line, replacement)
        tokens = parse(self.book, text)
        for token in tokens:
            if token.type in ("myst_target", "myst_line_comment", "front_matter"):
                edits.append((*token.map, ""))
            elif token.type == "math_block_label":
                edits.append((*token.map, f"$$\n{token.content.strip()}\n$$\n"))
            elif token.type == "myst_block_break":
                edits.append((*token.map, "---\n"))
            elif directive_name(token) is not None:
                first = lines[token.map[0]]
                indent = first[: len(first) - len(first.lstrip())]
                out = self.directive(read_directive(token))
                out = "".join(indent + line if line.strip() else line for line in out.splitlines(keepends=True))
                edits.append((*token.map, out if out.endswith("\n") or not out else out + "\n"))
            elif token.type == "inline" and any(c.type == "myst_role" for c in token.children or []):
                edits.append((*token.map, self._roles("".join(lines[slice(*token.map)]), token.children)))
        for start, end, replacement in sorted(edits, reverse=True):
            lines[start:end] = [replacement]
        return "".join(lines)

    def _roles(self, segment: str, children) -> str:
        out, cursor = [], 0
        for child in children:
            if child.type != "myst_role":
                continue
            name = child.meta["name"]
            for ticks in ("`", "``", "```"):
                literal = f"{{{name}}}{ticks}{child.content}{ticks}"
                if (at := segment.find(literal, cursor)) >= 0:
                    break
            else:
                raise self.error(f"could not locate the role {{{name}}}`{child.content}` in its paragraph")
            out += [segment[cursor:at], self.role(name, child.content)]
            cursor = at + len(literal)
        return "".join(out) + segment[cursor:]

    # roles -------------------------------------------------------------------------------
    def role(self, name: str, content: str) -> str:
        family, _, suffix = name.partition(":")
        if family in ("footcite", "cite"):
            keys = [k.strip() for k in content.split(",") if k.strip()]
            try:
                text = self.bibliography.cite(keys, suffix)
            except (KeyError, ValueError) as err:
                raise self.error(f"{{{name}}}`{content}`: {err}") from None
            self.cited += [k for k in keys if k not in self.cited]
            self.cited_any = True
            return text
        if name == "math":
            return f"${content}$"
        if name in ("doc", "ref", "numref", "prf:ref", "eq"):
            return self._link(name, content)
        raise self.error(f"the role {{{name}}} has no plain-Markdown rendering (course_lib/editions/myst.py)")

    def _link(self, name: str, content: str) -> str:
        text, target = None, content.strip()
        if target.endswith(">") and "<" in target:  # explicit title: {doc}`Title <target>`
            text, target = target[:-1].rsplit("<", 1)
            text, target = text.strip(), target.strip()
        if name == "doc":
            base = self.docname.rsplit("/", 1)[0] if "/" in self.docname else ""
            docname = target.lstrip("/") if target.startswith("/") else f"{base}/{target}".strip("/")
            if docname not in self.index.titles:
                raise self.error(f"{{doc}}`{content}`: {docname} is not in _toc.yml")
            return f"[{text or self.index.titles[docname]}]({self.book.page_url(docname)})"
        if target not in self.index.targets:
            raise self.error(f"{{{name}}}`{content}`: no label {target!r} in the book")
        found = self.index.targets[target]
        shown = text or found.text
        if name == "numref" and text and "%s" in text:
            shown = text.replace("%s", found.text.rsplit(" ", 1)[-1])
        return f"[{shown}]({self.book.page_url(found.docname, found.anchor)})"

    # directives --------------------------------------------------------------------------
    def directive(self, d: DirectiveText) -> str:
        if d.name in ENUMERATED:  # counted before its body, as BookIndex counts
            self.seen[d.name] += 1
            number = self.index.numbers.get((self.docname, d.name, self.seen[d.name]))
        body = self.convert(d.body).strip("\n") if d.body else ""
        if d.name in ENUMERATED:
            head = f"**{_title(d.name)}{f' {number}' if number else ''}**" + (f" ({self._inline(d.argument)})" if d.argument else "")
            return f"{head}\n\n{body}\n"
        if d.name == "prf:proof":
            return f"*Proof.* {body}\n"
        if d.name in ADMONITIONS:
            title = self._inline(d.argument) if d.name == "admonition" else d.name.capitalize()
            title = "See also" if d.name == "seealso" else title
            quoted = "\n".join(f"> {line}" if line.strip() else ">" for line in body.splitlines())
            return f"> **{title}**\n>\n{quoted}\n"
        if d.name == "math":
            return f"$$\n{d.body.strip()}\n$$\n"
        if d.name in ("code-block", "code", "sourcecode"):
            return f"```{d.argument}\n{d.body}\n```\n"
        if d.name in ("footbibliography", "bibliography"):
            return self._references()
        raise self.error(f"the directive {{{d.name}}} has no plain-Markdown rendering (course_lib/editions/myst.py)")

    def _inline(self, text: str) -> str:
        return self.convert(text).strip()

    def _references(self) -> str:
        if not self.cited:
            return ""
        listed, self.cited = self.bibliography.reference_list(self.cited), []
        return listed + "\n"


def leftovers(book: Book, text: str) -> list[str]:
    """MyST constructs that survived in `text`: directive fences, roles, targets, :label: lines."""
    found = []
    for token in parse(book, text):
        if directive_name(token) is not None:
            found.append(f"directive {token.info.split()[0]}")
        elif token.type == "myst_target":
            found.append(f"target ({token.content})=")
        elif token.type == "inline":
            found += [f"role {{{c.meta['name']}}}`{c.content}`" for c in token.children or [] if c.type == "myst_role"]
        if token.type in ("paragraph_open", "fence") and token.map:
            lines = text.splitlines()[slice(*token.map)]
            found += [f"line {line.strip()!r}" for line in lines if line.strip().startswith(":label:")]
    return found
