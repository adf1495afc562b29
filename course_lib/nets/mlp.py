"""A noise-conditioned MLP for low-dimensional data, with random Fourier features of the noise
level (the Gaussian Fourier projection of Song et al., 2021; Tancik et al., 2020)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..utils import batch_time


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_scale(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


class FourierFeatures(nn.Module):
    """gamma(c) = [sin(2 pi w c), cos(2 pi w c)]: (B, 2F) for c: (B,), with F frozen random
    frequencies w ~ N(0, scale^2) (a buffer: saved with the weights, never trained)."""

    def __init__(self, n_frequencies: int, scale: float):
        super().__init__()
        _check_int("n_frequencies", n_frequencies, 1)
        _check_scale("fourier_scale", scale)
        self.register_buffer("freqs", torch.randn(n_frequencies) * scale)

    def forward(self, c: Tensor) -> Tensor:
        angles = 2 * math.pi * torch.outer(c, self.freqs.to(c.dtype))
        return torch.cat([angles.sin(), angles.cos()], dim=1)


@dataclass(frozen=True)
class MLPConfig:
    """Sizes of `ScoreMLP`."""

    dim: int = 2                 # data dimension D of x: (B, D)
    width: int = 128             # units of every hidden layer
    depth: int = 3               # hidden layers after the input layer (>= 1)
    n_frequencies: int = 16      # random Fourier frequencies of c; the embedding has 2 * n_frequencies features
    fourier_scale: float = 4.0   # std of those frequencies: ~4 suits t in [0, 1], ~1 suits log sigma

    def __post_init__(self):
        _check_int("dim", self.dim, 1)
        _check_int("width", self.width, 1)
        _check_int("depth", self.depth, 1)
        _check_int("n_frequencies", self.n_frequencies, 1)
        _check_scale("fourier_scale", self.fourier_scale)


class ScoreMLP(nn.Module):
    """out = MLP(x, c): (B, D) for x: (B, D) and a noise level c: (B,) (or a float).

    c enters through Fourier features and a two-layer embedding, added to every hidden layer:
    h_0 = SiLU(W_in x + E_0 e), h_l = SiLU(W_l h_{l-1} + E_l e), out = W_out h_depth. The output
    is raw; wrap it (e.g. `parameterization.ScoreFromEps`) to read it as a score.
    """

    def __init__(self, config: MLPConfig = MLPConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.embed = nn.Sequential(FourierFeatures(config.n_frequencies, config.fourier_scale),
                                   nn.Linear(2 * config.n_frequencies, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU())
        self.inp = nn.Linear(config.dim, w)
        self.hidden = nn.ModuleList(nn.Linear(w, w) for _ in range(config.depth))
        self.cond = nn.ModuleList(nn.Linear(w, w) for _ in range(config.depth + 1))
        self.out = nn.Linear(w, config.dim)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, c: Tensor | float) -> Tensor:
        if not torch.is_tensor(x) or x.ndim != 2 or x.shape[1] != self.config.dim:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape (B, D={self.config.dim}), got {shape}")
        e = self.embed(batch_time(c, x))
        h = self.act(self.inp(x) + self.cond[0](e))
        for layer, cond in zip(self.hidden, self.cond[1:]):
            h = self.act(layer(h) + cond(e))
        return self.out(h)
