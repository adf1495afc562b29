"""Noise-conditioned networks: `ScoreMLP` for low-dimensional data and `UNet` for small images.

Both map (x: (B, *D), c: (B,)) to a raw output of x's shape; c is the time t or log sigma (the
caller decides) and the output becomes a score, eps or x_0 through the wrappers of
`course_lib.parameterization`.
"""

from .mlp import FourierFeatures, MLPConfig, ScoreMLP
from .unet import UNet, UNetConfig

__all__ = ["FourierFeatures", "MLPConfig", "ScoreMLP", "UNet", "UNetConfig"]
