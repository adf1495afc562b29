"""A small noise-conditioned U-Net for 8x8 to 32x32 images (the DDPM / NCSN++ layout, reduced):
residual blocks with GroupNorm and SiLU, the noise embedding added inside each block, strided
convolutions down, nearest-neighbour upsampling, and one self-attention block at the lowest
resolution (Ho, Jain & Abbeel, 2020; Song et al., 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..utils import append_dims, batch_time
from .mlp import FourierFeatures, _check_int, _check_scale


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of `UNet`."""

    image_size: int = 32                    # height = width of the input images
    in_channels: int = 1                    # image channels C of x: (B, C, H, W)
    channels: int = 32                      # width of the first resolution
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per resolution; len - 1 halvings
    num_res_blocks: int = 1                 # residual blocks per resolution going down (one more going up)
    attention: bool = True                  # one self-attention block at the lowest resolution
    dropout: float = 0.0                    # dropout probability inside residual blocks
    num_groups: int = 8                     # GroupNorm groups; must divide channels and every width
    n_frequencies: int = 32                 # random Fourier frequencies of the noise level c
    fourier_scale: float = 4.0              # std of those frequencies (~4 for t in [0, 1], ~1 for log sigma)

    def __post_init__(self):
        for name in ("image_size", "in_channels", "channels", "num_groups", "n_frequencies"):
            _check_int(name, getattr(self, name), 1)
        _check_int("num_res_blocks", self.num_res_blocks, 1)
        _check_scale("fourier_scale", self.fourier_scale)
        mult = self.channel_mult
        if not isinstance(mult, tuple) or not mult or not all(isinstance(m, int) and m >= 1 for m in mult):
            raise ValueError(f"channel_mult must be a non-empty tuple of integers >= 1, got {mult!r}")
        factor = 2 ** (len(mult) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size must be divisible by 2^(len(channel_mult) - 1) = {factor} "
                             f"(one halving per extra resolution), got {self.image_size}")
        widths = [self.channels] + [self.channels * m for m in mult]
        bad = [w for w in widths if w % self.num_groups]
        if bad:
            raise ValueError(f"num_groups={self.num_groups} must divide channels and every width "
                             f"channels * channel_mult[i], not {bad}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not isinstance(self.attention, bool):
            raise ValueError(f"attention must be True or False, got {self.attention!r}")


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + W SiLU(e); out = skip(x) + conv(dropout(SiLU(GN(h))))."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, config: UNetConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(config.num_groups, c_in), nn.GroupNorm(config.num_groups, c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.dropout = nn.Dropout(config.dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + append_dims(self.emb(F.silu(e)), x.ndim)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        height = x.shape[2]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        q, k, v = rearrange(self.qkv(tokens), "b n (three c) -> three b n c", three=3)
        out = self.proj(F.scaled_dot_product_attention(q, k, v))
        return x + rearrange(out, "b (h w) c -> b c h w", h=height)


class UNet(nn.Module):
    """out = UNet(x, c): (B, C, H, W) for x: (B, C, H, W) with H = W = image_size and a noise
    level c: (B,) (time t or log sigma). The output is raw; wrap it to read it as a score."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        ch, emb_dim = config.channels, 4 * config.channels
        self.embed = nn.Sequential(FourierFeatures(config.n_frequencies, config.fourier_scale),
                                   nn.Linear(2 * config.n_frequencies, emb_dim), nn.SiLU(),
                                   nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        widths, skips = [ch * m for m in config.channel_mult], [ch]
        self.down, c = nn.ModuleList(), ch
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                self.down.append(ResBlock(c, width, emb_dim, config))
                c = width
                skips.append(c)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # H -> H / 2 for even H
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, config), ResBlock(c, c, emb_dim, config)])
        self.attn = SelfAttention(c, config.num_groups) if config.attention else nn.Identity()
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(config.num_res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), width, emb_dim, config))
                c = width
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(c, c, 3, padding=1)))
        self.norm_out = nn.GroupNorm(config.num_groups, c)
        self.conv_out = nn.Conv2d(c, config.in_channels, 3, padding=1)

    def _check_x(self, x: Tensor) -> None:
        cfg = self.config
        expected = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if not torch.is_tensor(x) or x.ndim != 4 or tuple(x.shape[1:]) != expected:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape (B, {', '.join(map(str, expected))}), got {shape}")

    def forward(self, x: Tensor, c: Tensor | float) -> Tensor:
        self._check_x(x)
        e = self.embed(batch_time(c, x))
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, e) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid[1](self.attn(self.mid[0](h, e)), e)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), e) if isinstance(layer, ResBlock) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))

