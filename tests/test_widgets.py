"""The explorer: one display bundle with the live widget view and a static grid of figures,
the grid's images and labels, the live controls, and clear errors for bad arguments."""

import base64
import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from course_lib import widgets  # noqa: E402

CONTROLS = {"step_size": [0.01, 0.1, 1.0], "n_steps": [10, 100], "noise": [True, False]}


class Recorder:
    """render(**values) -> a small Figure, remembering every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, step_size, n_steps, noise):
        self.calls.append((step_size, n_steps, noise))
        fig, ax = plt.subplots(figsize=(2.0, 1.5))
        ax.plot([0, n_steps], [0, step_size], color="C0" if noise else "C1")
        return fig


def _images(html):
    """(alt text, decoded PNG) for every <img> of the fallback."""
    found = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', html)
    return [(alt, Image.open(io.BytesIO(base64.b64decode(data)))) for data, alt in found]


def test_bundle_holds_the_widget_view_and_the_html_fallback():
    explorer = widgets.explorer(Recorder(), CONTROLS)
    bundle = explorer._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", widgets.WIDGET_VIEW}
    assert bundle[widgets.WIDGET_VIEW]["model_id"] == explorer.widget.model_id
    assert bundle[widgets.WIDGET_VIEW]["version_major"] == 2
    assert bundle["text/plain"] == "<explorer over step size, n steps, noise>"
    assert bundle["text/html"].startswith('<div class="course-explorer">')


def test_fallback_renders_each_combination_once_with_its_label():
    render = Recorder()
    explorer = widgets.explorer(render, CONTROLS, dpi=50)
    html = explorer.fallback_html()
    images = _images(html)
    assert len(images) == 3 * 2 * 2 == len(render.calls) == len(set(render.calls))
    assert plt.get_fignums() == []  # every figure is closed after rendering
    alts = {alt for alt, _ in images}
    assert "step size = 0.1, n steps = 100, noise = off" in alts and len(alts) == 12
    assert all(img.format == "PNG" and img.size == (100, 75) for _, img in images)  # 2 x 1.5 in at dpi 50
    # columns: the first control; rows: the second; one collapsible table per value of the third
    assert html.count("<table") == 2 and html.count("<details") == 2 and html.count("<details open>") == 1
    assert "<summary>noise = on</summary>" in html and ">step size = 0.01</th>" in html
    assert ">n steps = 10</th>" in html
    explorer.fallback_html()
    assert len(render.calls) == 12  # cached


def test_fallback_subset_and_held_values():
    render = Recorder()
    explorer = widgets.explorer(render, CONTROLS, fallback={"step_size": [0.01, 1.0]},
                                initial={"n_steps": 100}, labels={"step_size": "step size η"})
    html = explorer.fallback_html()
    # n_steps and noise are not listed: held at their initial values, 100 and on
    assert sorted(render.calls) == [(0.01, 100, True), (1.0, 100, True)]
    assert "n steps = 100, noise = on" in html and "<details" not in html
    assert {alt for alt, _ in _images(html)} == {"step size η = 0.01, n steps = 100, noise = on",
                                                "step size η = 1, n steps = 100, noise = on"}


def test_fallback_stays_small_at_the_default_dpi():
    def render(step_size, n_steps, noise):
        fig, ax = plt.subplots(figsize=(3.0, 3.0))
        ax.scatter(range(300), [(i * step_size) % 7 for i in range(300)], s=4)
        ax.set_title(f"{step_size} {n_steps} {noise}")
        return fig

    html = widgets.explorer(render, CONTROLS).fallback_html()
    assert len(html) < 12 * 40_000  # under 40 kB of base64 per figure


def test_live_controls_follow_the_values_and_redraw(capsys):
    render = Recorder()
    explorer = widgets.explorer(render, CONTROLS, initial={"step_size": 0.1})
    row, output = explorer.widget.children
    step, n_steps, noise = row.children
    assert type(step).__name__ == "SelectionSlider" and step.options == (("0.01", 0.01), ("0.1", 0.1), ("1", 1.0))
    assert step.value == 0.1 and n_steps.value == 10 and step.description == "step size"
    assert type(noise).__name__ == "Checkbox" and noise.value is True
    assert render.calls[-1] == (0.1, 10, True)  # the initial figure
    step.value = 1.0
    noise.value = False
    assert render.calls[-2:] == [(1.0, 10, True), (1.0, 10, False)]
    assert plt.get_fignums() == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(render=None), "render must be a function"),
    (dict(controls={}), "controls must be a non-empty dict"),
    (dict(controls=[("a", [1])]), "controls must be a non-empty dict"),
    (dict(controls={"step_size": []}), "must be a non-empty list"),
    (dict(controls={"step_size": "0.1"}), "must be a non-empty list"),
    (dict(controls={"step size": [0.1]}), "identifiers"),
    (dict(controls={"step_size": [0.1, 0.1]}), "repeated values"),
    (dict(fallback={"steps": [10]}), "unknown controls ['steps']"),
    (dict(fallback={"n_steps": [10, 1000]}), "must hold values of controls['n_steps']"),
    (dict(initial={"noise": None}), "must hold values of controls['noise']"),
    (dict(labels={"eta": "step"}), "unknown controls ['eta']"),
    (dict(dpi=0), "dpi must be a number in [10, 200]"),
    (dict(max_figures=8), "would hold 12 figures, more than max_figures=8"),
])
def test_bad_arguments_raise_a_clear_error(kwargs, message):
    arguments = dict(render=Recorder(), controls=CONTROLS) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        widgets.explorer(**arguments)


def test_render_must_return_a_figure():
    explorer = widgets.explorer(lambda step_size: None, {"step_size": [0.1]})
    with pytest.raises(ValueError, match="render must return a matplotlib Figure, got NoneType"):
        explorer.fallback_html()


def test_the_book_shows_the_fallback_not_the_widget_view():
    """myst-nb ranks the bundle's types by `nb_mime_priority_overrides` (_config.yml): with it,
    text/html comes before the widget view (without it, the widget view would win and the book,
    which loads no widget JavaScript, would show nothing)."""
    yaml = pytest.importorskip("yaml")
    render = pytest.importorskip("myst_nb.core.render")
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "_config.yml").read_text())
    overrides = [tuple(o) for o in config["sphinx"]["config"]["nb_mime_priority_overrides"]]
    order = render.get_mime_priority("html", overrides)
    assert order.index("text/html") < order.index(widgets.WIDGET_VIEW)
    default = render.get_mime_priority("html", [])
    assert default.index(widgets.WIDGET_VIEW) < default.index("text/html")
