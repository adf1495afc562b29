"""Interactive explorers: ipywidgets controls over a figure, with a static fallback.

`explorer(render, controls)` returns an object to display as a cell's last expression, where
`render(**values) -> matplotlib Figure` draws one figure and `controls` maps each keyword of
`render` to the list of values it may take (a step size, a number of steps, noise on or off).

* With a kernel (Jupyter, JupyterLab, Colab) it is a live ipywidgets interface: one control per
  entry (a checkbox for on/off values, a slider over the listed values otherwise) above the
  figure, redrawn on every change.
* Without one (the HTML book, a notebook viewer) the same output shows a pre-rendered grid of
  figures over a subset of the values (`fallback`): the first two controls that vary span the
  columns and the rows of a labelled table, one table per combination of the others, with the
  figures embedded as base64 PNG at a low dpi to keep the page light.

Both views travel in one display bundle: the widget view
(`application/vnd.jupyter.widget-view+json`, from the ipywidgets object itself) and the grid as
`text/html`. A front end shows the richest type it can render. JupyterLab and Notebook 7 rank
the widget renderer (rank -10, from jupyterlab_widgets) before HTML (rank 50) for the trusted
outputs of a cell run in the session; outputs reopened untrusted get the first *safe* renderer,
the (sanitized) HTML grid. The book (myst-nb) prefers `text/html` over the widget view and loads
no widget JavaScript (`nb_mime_priority_overrides` in `_config.yml`).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from typing import Callable, Sequence

import matplotlib.pyplot as plt

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _label(value) -> str:
    """How a control value is written in labels: on/off, 0.03, 100, or str(value)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _check_controls(controls) -> dict[str, list]:
    if not isinstance(controls, dict) or not controls:
        raise ValueError("controls must be a non-empty dict mapping each keyword of render to its values")
    checked = {}
    for name, values in controls.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"control names must be keywords of render (identifiers), got {name!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"controls[{name!r}] must be a non-empty list of values, got {values!r}")
        labels = [_label(v) for v in values]
        if len(set(labels)) != len(labels):
            raise ValueError(f"controls[{name!r}] has repeated values: {labels}")
        checked[name] = list(values)
    return checked


def _check_subset(name: str, subset, values: list, what: str) -> list:
    subset = list(subset) if isinstance(subset, Sequence) and not isinstance(subset, str) else [subset]
    missing = [v for v in subset if v not in values]
    if not subset or missing:
        raise ValueError(f"{what}[{name!r}] must hold values of controls[{name!r}] = {values}, got {subset}")
    return subset


class Explorer:
    """A live ipywidgets explorer in Jupyter, a pre-rendered grid of figures elsewhere.

    Build it with `explorer(...)`; display it by making it a cell's last expression.
    """

    def __init__(self, render: Callable, controls: dict, *, fallback: dict | None = None,
                 initial: dict | None = None, labels: dict | None = None, dpi: float = 60,
                 max_figures: int = 24):
        if not callable(render):
            raise ValueError(f"render must be a function render(**values) -> Figure, got {render!r}")
        self.render, self.controls = render, _check_controls(controls)
        for what, given in (("fallback", fallback), ("initial", initial), ("labels", labels)):
            unknown = set(given or {}) - set(self.controls)
            if unknown:
                raise ValueError(f"{what} names unknown controls {sorted(unknown)}; "
                                 f"the controls are {list(self.controls)}")
        self.initial = {n: v[0] for n, v in self.controls.items()}
        for name, value in (initial or {}).items():
            self.initial[name] = _check_subset(name, [value], self.controls[name], "initial")[0]
        self.labels = {n: (labels or {}).get(n, n.replace("_", " ")) for n in self.controls}
        self.fallback = {n: self._fallback_values(n, fallback) for n in self.controls}
        if not (isinstance(dpi, (int, float)) and 10 <= dpi <= 200):
            raise ValueError(f"dpi must be a number in [10, 200], got {dpi!r}")
        n_figures = len(list(itertools.product(*self.fallback.values())))
        if n_figures > max_figures:
            raise ValueError(f"the fallback grid would hold {n_figures} figures, more than "
                             f"max_figures={max_figures}: pass fallback= with fewer values")
        self.dpi, self._widget, self._html = dpi, None, None

    def _fallback_values(self, name: str, fallback: dict | None) -> list:
        """The values of control `name` in the static grid: all of them without a `fallback`,
        those it lists, or the initial value alone when it does not list the control."""
        if fallback is None:
            return self.controls[name]
        return _check_subset(name, fallback.get(name, [self.initial[name]]), self.controls[name], "fallback")

    def _figure(self, values: dict):
        fig = self.render(**values)
        if not isinstance(fig, plt.Figure):
            raise ValueError(f"render must return a matplotlib Figure, got {type(fig).__name__}")
        return fig

    # -- the live view --------------------------------------------------------------------
    @property
    def widget(self):
        """The ipywidgets interface: the controls in a row above an Output showing the figure."""
        if self._widget is None:
            import ipywidgets as widgets
            from IPython.display import display

            controls = {name: self._control(widgets, name, values) for name, values in self.controls.items()}

            def show(**values):
                fig = self._figure(values)
                display(fig)
                plt.close(fig)

            output = widgets.interactive_output(show, controls)
            self._widget = widgets.VBox([widgets.HBox(list(controls.values())), output])
        return self._widget

    def _control(self, widgets, name: str, values: list):
        common = dict(description=self.labels[name], style={"description_width": "initial"})
        if all(isinstance(v, bool) for v in values):
            return widgets.Checkbox(value=self.initial[name], **common)
        return widgets.SelectionSlider(options=[(_label(v), v) for v in values], value=self.initial[name],
                                       continuous_update=False, **common)

    # -- the static view ------------------------------------------------------------------
    def _png(self, values: dict) -> str:
        fig = self._figure(values)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=self.dpi)
        plt.close(fig)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _caption(self, values: dict) -> str:
        return ", ".join(f"{self.labels[n]} = {_label(v)}" for n, v in values.items())

    def fallback_html(self) -> str:
        """The pre-rendered grid as HTML (rendered once, then cached)."""
        if self._html is None:
            varying = [n for n, v in self.fallback.items() if len(v) > 1]
            cols, rows, tabs = (varying[:1], varying[1:2], varying[2:])
            fixed = {n: v[0] for n, v in self.fallback.items() if n not in varying}
            parts = ['<div class="course-explorer">',
                     '<p style="font-size:0.85em;margin:0 0 0.3em">Static view of an interactive explorer '
                     '(run the notebook to move the controls)'
                     + (f"; {html.escape(self._caption(fixed))}" if fixed else "") + ".</p>"]
            for k, tab in enumerate(itertools.product(*(self.fallback[n] for n in tabs))):
                table = self._table(fixed | dict(zip(tabs, tab)), cols, rows)
                if tabs:
                    caption = html.escape(self._caption(dict(zip(tabs, tab))))
                    table = f"<details{' open' if k == 0 else ''}><summary>{caption}</summary>{table}</details>"
                parts.append(table)
            self._html = "\n".join(parts + ["</div>"])
        return self._html

    def _table(self, held: dict, cols: list, rows: list) -> str:
        """One table: the values of cols[0] across, of rows[0] down, the others as in `held`."""
        col_values = [{cols[0]: c} for c in self.fallback[cols[0]]] if cols else [{}]
        row_values = [{rows[0]: r} for r in self.fallback[rows[0]]] if rows else [{}]
        cell = 'style="padding:2px;text-align:center;font-weight:normal;font-size:0.85em"'
        head = "".join(f"<th {cell}>{html.escape(self._caption(c))}</th>" for c in col_values)
        lines = [f'<table style="border-collapse:collapse;margin:0"><tr><th></th>{head}</tr>']
        for r in row_values:
            cells = []
            for c in col_values:
                given = held | r | c
                values = {n: given[n] for n in self.controls}  # in the controls' order
                alt = html.escape(self._caption(values))
                cells.append(f'<td {cell}><img src="data:image/png;base64,{self._png(values)}" '
                             f'alt="{alt}" title="{alt}" style="max-width:100%"></td>')
            lines.append(f"<tr><th {cell}>{html.escape(self._caption(r))}</th>{''.join(cells)}</tr>")
        return "".join(lines) + "</table>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = dict(self.widget._repr_mimebundle_())
        bundle["text/html"] = self.fallback_html()
        bundle["text/plain"] = f"<explorer over {', '.join(self.labels.values())}>"
        return bundle


def explorer(render: Callable, controls: dict, *, fallback: dict | None = None, initial: dict | None = None,
             labels: dict | None = None, dpi: float = 60, max_figures: int = 24) -> Explorer:
    """An explorer of `render(**values) -> Figure` over `controls` (name -> list of values).

    `fallback` (name -> sub-list) chooses the values pre-rendered for the static view; with
    `fallback=None` every value is, and a control missing from a given `fallback` is held at
    its initial value. `initial` (name -> value) sets the live controls' starting values (default:
    each list's first); `labels` (name -> text) names them (default: the name, "_" -> " ").
    The static view holds at most `max_figures` figures at `dpi`. Returns an `Explorer`.
    """
    return Explorer(render, controls, fallback=fallback, initial=initial, labels=labels, dpi=dpi,
                    max_figures=max_figures)
