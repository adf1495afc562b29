"""Figures the chapters share: densities, score fields, samples, image grids and animations.

Every function draws on a matplotlib `Axes` it is given and returns it, so chapters compose
panels freely. Functions are evaluated in torch on a grid and moved to NumPy only here, at
the boundary with matplotlib.
"""

from __future__ import annotations

import re
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

Extent = tuple[float, float, float, float]  # (x_min, x_max, y_min, y_max)


def grid_points(extent: Extent, n: int, *, device=None, dtype=None) -> tuple[Tensor, Tensor, Tensor]:
    """A regular n x n grid over `extent`: returns (xs: (n,), ys: (n,), points: (n*n, 2)),
    points in row-major order (y varies slowest), ready to reshape to (n, n)."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    x_min, x_max, y_min, y_max = extent
    if not (x_min < x_max and y_min < y_max):
        raise ValueError(f"extent must be (x_min, x_max, y_min, y_max) with min < max, got {extent}")
    xs = torch.linspace(x_min, x_max, n, device=device, dtype=dtype)
    ys = torch.linspace(y_min, y_max, n, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xs, ys, torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def plot_density(ax: plt.Axes, log_prob_fn: Callable[[Tensor], Tensor], extent: Extent, *,
                 grid_size: int = 100, levels: int = 12, cmap: str = "Blues", device=None) -> plt.Axes:
    """Filled contours of p(x) = exp(log_prob_fn(x)) for a 2-D density."""
    xs, ys, pts = grid_points(extent, grid_size, device=device)
    with torch.no_grad():
        dens = log_prob_fn(pts).exp().reshape(grid_size, grid_size)
    ax.contourf(xs.cpu().numpy(), ys.cpu().numpy(), dens.cpu().numpy(), levels=levels, cmap=cmap)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    return ax


def plot_score_field(ax: plt.Axes, score_fn: Callable[[Tensor], Tensor], extent: Extent, *,
                     grid_size: int = 20, normalize: bool = True, color: str = "black", device=None) -> plt.Axes:
    """Quiver plot of a 2-D vector field `score_fn(points: (N, 2)) -> (N, 2)`.

    With `normalize=True` every arrow has the same length and only the direction is drawn;
    the scores of a density vary over orders of magnitude, which would hide most arrows.
    """
    xs, ys, pts = grid_points(extent, grid_size, device=device)
    vec = score_fn(pts).detach()  # no torch.no_grad(): a score may itself be computed by autograd
    if normalize:
        vec = vec / vec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u, v = (c.reshape(grid_size, grid_size).cpu().numpy() for c in vec.unbind(1))
    xx, yy = np.meshgrid(xs.cpu().numpy(), ys.cpu().numpy())
    ax.quiver(xx, yy, u, v, color=color, angles="xy", pivot="mid", width=0.004)
    ax.set_aspect("equal")
    return ax


def plot_samples(ax: plt.Axes, x: Tensor, *, extent: Extent | None = None, s: float = 2.0,
                 alpha: float = 0.5, color: str = "C1", label: str | None = None) -> plt.Axes:
    """Scatter plot of 2-D samples x: (N, 2)."""
    pts = x.detach().cpu().numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=alpha, color=color, label=label, linewidths=0)
    if extent is not None:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    return ax


def image_grid(ax: plt.Axes, images: Tensor, *, nrow: int = 8, value_range=(-1.0, 1.0)) -> plt.Axes:
    """Tile images (N, C, H, W) with values in `value_range` into one picture on `ax`."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    lo, hi = value_range
    imgs = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    n, c, h, w = imgs.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    canvas = torch.ones(c, nrows * (h + 1) + 1, ncol * (w + 1) + 1)
    for k in range(n):
        r, q = divmod(k, ncol)
        canvas[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = imgs[k]
    picture = canvas.permute(1, 2, 0).numpy()
    ax.imshow(picture.squeeze(-1) if c == 1 else picture, cmap="gray" if c == 1 else None,
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    return ax


# -- animations -----------------------------------------------------------------------------
_PLAYER_GLYPHS = {  # matplotlib's Font Awesome icon classes -> glyphs every font has
    "fa fa-minus": "\u2212", "fa fa-plus": "+", "fa fa-pause": "\u275a\u275a",
    "fa fa-play": "\u25b6", "fa fa-play fa-flip-horizontal": "\u25c0",
    "fa fa-step-backward": "|\u25c0", "fa fa-step-forward": "\u25b6|",
    "fa fa-fast-backward": "|\u25c0\u25c0", "fa fa-fast-forward": "\u25b6\u25b6|",
}


class Animation:
    """A matplotlib animation for a notebook cell: JavaScript HTML where scripts run (the HTML
    book, Jupyter, Colab) and a still PNG frame where they cannot (static viewers).

    Build it with `animation(fig, update, n_frames)`; display it by making it a cell's last
    expression. The frames are rendered once, when the cell first displays it.
    """

    def __init__(self, anim, fig: plt.Figure, update: Callable[[int], object], n_frames: int, still_frame: int):
        self.anim, self.fig, self.update, self.n_frames = anim, fig, update, n_frames
        self.still_frame = still_frame % n_frames

    def to_jshtml(self) -> str:
        """The animation as self-contained HTML with its frames embedded (matplotlib's to_jshtml).

        matplotlib's player loads Font Awesome from a CDN for its button icons; the book must
        work offline, so that link is dropped and each icon becomes a plain Unicode glyph."""
        html = re.sub(r"<link[^>]*font-awesome[^>]*>", "", self.anim.to_jshtml(default_mode="once"))
        return re.sub(r'<i class="(fa [^"]+)"></i>',
                      lambda m: f'<span aria-hidden="true">{_PLAYER_GLYPHS.get(m.group(1), "?")}</span>', html)

    def still_png(self) -> bytes:
        """PNG bytes of the frame `still_frame` (default: the last one)."""
        import io

        self.update(self.still_frame)  # draw that frame
        buffer = io.BytesIO()
        self.fig.savefig(buffer, format="png")
        return buffer.getvalue()

    def _repr_mimebundle_(self, include=None, exclude=None):
        html = self.to_jshtml()
        return {"text/html": html, "image/png": self.still_png(),
                "text/plain": f"<animation of {self.n_frames} frames>"}


def animation(fig: plt.Figure, update: Callable[[int], object], n_frames: int, *, interval: int = 120,
              still_frame: int = -1) -> Animation:
    """Animate `fig` by calling `update(i)` for frames i = 0..n_frames-1 (it redraws the artists).

    Keep pages light: tens of frames at a modest figure size and dpi. The figure is closed so the
    notebook does not also show it as a static image. Returns an `Animation` to display.
    """
    from matplotlib.animation import FuncAnimation

    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")
    if not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval must be a positive integer (milliseconds), got {interval!r}")
    anim = FuncAnimation(fig, update, frames=n_frames, interval=interval, repeat=False,
                         cache_frame_data=False)
    plt.close(fig)
    return Animation(anim, fig, update, n_frames, still_frame)
