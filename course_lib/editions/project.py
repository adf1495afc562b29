"""What the editions read from the book's own files: the one repository URL, the chapter order,
titles, and the numbers and labels that the HTML book gives its exercises and definitions.

`_config.yml`'s `repository.url` is the only place the repository's URL is written; the Colab
edition's bootstrap cell, its links to the published pages and the launch buttons all derive
from it. Its `repository.branch` is the branch the launch buttons open: the publishing workflow
pushes the Colab edition there (`book/`) and the student edition (`student/book/`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import yaml

SOURCE_BRANCH = "main"  # the branch the course's package is installed from


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a label points: its page, its anchor and the text a reference shows."""

    docname: str  # e.g. "book/01_score_function"
    anchor: str  # the HTML id
    text: str  # "Exercise 4", "Definition 1", a section's title, or "(2)" for an equation


@dataclasses.dataclass(frozen=True)
class Book:
    """A Jupyter Book source tree: `root` holds `_config.yml`, `_toc.yml` and `references.bib`."""

    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> "Book":
        """The book at `root`, by default the current folder or else this repository."""
        candidates = [Path(root)] if root is not None else [Path.cwd(), Path(__file__).resolve().parents[2]]
        for path in candidates:
            if (path / "_config.yml").is_file():
                return cls(path.resolve())
        raise ValueError(f"root must be a book folder with a _config.yml, got {candidates[0]}")

    @functools.cached_property
    def config(self) -> dict:
        return yaml.safe_load((self.root / "_config.yml").read_text()) or {}

    @property
    def repository_url(self) -> str:
        url = (self.config.get("repository") or {}).get("url", "").rstrip("/")
        parts = urlparse(url).path.strip("/").split("/")
        if urlparse(url).netloc != "github.com" or len(parts) != 2:
            raise ValueError(f"_config.yml repository.url must be https://github.com/<owner>/<name>, got {url!r}")
        return url

    @property
    def launch_branch(self) -> str:
        """The branch that the launch buttons open (where the Colab edition is pushed)."""
        return (self.config.get("repository") or {}).get("branch", SOURCE_BRANCH)

    @property
    def pages_url(self) -> str:
        """GitHub Pages' address of the published HTML book."""
        owner, name = urlparse(self.repository_url).path.strip("/").split("/")
        return f"https://{owner.lower()}.github.io/{name}"

    @property
    def install_requirement(self) -> str:
        """What the bootstrap cell gives pip: the package from the repository's source branch."""
        return f"git+{self.repository_url}@{SOURCE_BRANCH}"

    def page_url(self, docname: str, anchor: str = "") -> str:
        return f"{self.pages_url}/{docname}.html" + (f"#{anchor}" if anchor else "")

    def colab_url(self, path: str) -> str:
        """Colab's address of a notebook at `path` on the launch branch."""
        owner_name = urlparse(self.repository_url).path.strip("/")
        return f"https://colab.research.google.com/github/{owner_name}/blob/{self.launch_branch}/{path}"

    @functools.cached_property
    def docnames(self) -> tuple[str, ...]:
        """Every document of `_toc.yml`, in the order the book (and its numbering) follows."""
        from sphinx_external_toc.parsing import parse_toc_yaml

        site_map = parse_toc_yaml(self.root / "_toc.yml")

        def walk(docname):
            yield docname
            for subtree in site_map[docname].subtrees:
                for item in subtree.items:
                    if isinstance(item, str) and item in site_map:
                        yield from walk(item)

        return tuple(walk(site_map.root.docname))

    def source(self, docname: str) -> Path:
        for suffix in (".ipynb", ".md"):
            if (path := self.root / f"{docname}{suffix}").is_file():
                return path
        raise ValueError(f"docname {docname!r} has no .ipynb or .md file under {self.root}")

    def docname(self, path: str | Path) -> str:
        return Path(path).resolve().relative_to(self.root).with_suffix("").as_posix()

    @property
    def chapters(self) -> list[Path]:
        """The notebooks under book/ (in the table of contents or not), sorted by name."""
        return sorted(p for p in (self.root / "book").glob("*.ipynb") if not p.name.startswith((".", "_")))

    def markdown_sources(self, docname: str) -> list[str]:
        path = self.source(docname)
        if path.suffix == ".md":
            return [path.read_text()]
        return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]

    @functools.cached_property
    def index(self):
        """Numbers, labels and titles of the whole book (see `myst.BookIndex`)."""
        from .myst import BookIndex

        return BookIndex.build(self)
