"""Plotting helpers: grid layout, argument checks, image tiling (Agg backend, no display)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import plotting  # noqa: E402


def test_grid_points_are_row_major_over_the_extent():
    xs, ys, pts = plotting.grid_points((-1.0, 1.0, 0.0, 2.0), 3)
    assert pts.shape == (9, 2)
    assert torch.equal(pts[:3, 1], torch.zeros(3)) and torch.equal(pts[:3, 0], xs)  # y varies slowest
    assert torch.equal(pts[::3, 1], ys)
    with pytest.raises(ValueError, match="extent"):
        plotting.grid_points((1.0, -1.0, 0.0, 1.0), 3)
    with pytest.raises(ValueError, match="n must be"):
        plotting.grid_points((0.0, 1.0, 0.0, 1.0), 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_tiles_images_with_a_one_pixel_border(channels):
    images = torch.linspace(-1, 1, 5)[:, None, None, None].expand(5, channels, 8, 8)
    fig, ax = plt.subplots()
    plotting.image_grid(ax, images, nrow=3)
    picture = ax.get_images()[0].get_array()
    assert picture.shape[:2] == (2 * 9 + 1, 3 * 9 + 1)  # 2 rows x 3 columns of 8x8 plus borders
    first, second = picture[1, 1], picture[1, 10]  # one pixel of images 0 and 1 (all channels)
    assert np.allclose(first, 0.0) and np.allclose(second, 0.25)  # [-1, 1] -> [0, 1]
    plt.close(fig)


def test_image_grid_rejects_bad_shapes():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="images must have shape"):
        plotting.image_grid(ax, torch.zeros(4, 2, 8, 8))
    plt.close(fig)


def test_score_field_accepts_an_autograd_score():
    """The field is evaluated with autograd enabled, so a score computed by autograd works."""
    def autograd_score(x):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad((-(x**2).sum(1) / 2).sum(), x)
        return g
    fig, ax = plt.subplots()
    plotting.plot_score_field(ax, autograd_score, (-1.0, 1.0, -1.0, 1.0), grid_size=4)
    assert len(ax.collections) == 1
    plt.close(fig)


def test_animation_offers_javascript_html_and_a_still_frame():
    fig, ax = plt.subplots(figsize=(2, 2), dpi=40)
    points = ax.scatter([0.0], [0.0])
    drawn = []

    def update(i):
        drawn.append(i)
        points.set_offsets([[i, i]])

    anim = plotting.animation(fig, update, 4, still_frame=-1)
    bundle = anim._repr_mimebundle_()
    assert "<script" in bundle["text/html"] and bundle["text/html"].count("data:image/png;base64") == 4
    assert bundle["image/png"].startswith(b"\x89PNG") and drawn[-1] == 3  # the still is the last frame
    with pytest.raises(ValueError, match="n_frames"):
        plotting.animation(fig, update, 0)


def test_animation_player_needs_nothing_from_the_network():
    """matplotlib's player links Font Awesome from a CDN; the book works offline, so the link is
    dropped and every button shows a glyph instead of an icon-font class."""
    fig, ax = plt.subplots(figsize=(2, 2), dpi=40)
    line = ax.plot([0.0], [0.0])[0]
    html = plotting.animation(fig, lambda i: line.set_data([i], [i]), 3).to_jshtml()
    assert "<link" not in html and "http://" not in html and "https://" not in html
    assert 'class="fa' not in html and html.count("<button") == 9 and "?</span>" not in html
    assert '<span aria-hidden="true">\u25b6</span>' in html  # the play button
