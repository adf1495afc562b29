"""Where the code runs and how big the work is: device choice, seeding, size profiles.

A chapter calls `get_profile()` once and reads its sizes from the result, so the same
notebook runs in seconds in CI (`ci`), in minutes on a laptop (`cpu`) and at full scale on
a GPU (`gpu`). The profile is chosen automatically (`gpu` when CUDA is present, else
`cpu`) unless the environment variable `COURSE_PROFILE` names one.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

PROFILE_ENV_VAR = "COURSE_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Sizes a chapter scales with. Chapters with their own knobs use `pick`."""

    name: str            # "ci", "cpu" or "gpu"
    train_steps: int     # optimizer steps of a chapter's main training run
    batch_size: int      # training batch size
    n_samples: int       # samples drawn for figures and metrics
    sampler_steps: int   # steps of a long (reference-quality) sampler run
    grid_size: int       # points per axis of density and score-field plots

    def pick(self, *, ci, cpu, gpu):
        """The value given for this profile: `profile.pick(ci=200, cpu=2_000, gpu=20_000)`."""
        return {"ci": ci, "cpu": cpu, "gpu": gpu}[self.name]


PROFILES = {
    "ci": Profile("ci", train_steps=300, batch_size=256, n_samples=1_000, sampler_steps=100, grid_size=24),
    "cpu": Profile("cpu", train_steps=3_000, batch_size=512, n_samples=5_000, sampler_steps=500, grid_size=40),
    "gpu": Profile("gpu", train_steps=30_000, batch_size=1_024, n_samples=50_000, sampler_steps=1_000, grid_size=64),
}


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    `prefer` (e.g. "cpu") forces a device; asking for one that is absent is an error.
    """
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("prefer='cuda' but CUDA is not available on this machine")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("prefer='mps' but MPS is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def get_profile(name: str | None = None) -> Profile:
    """The size profile: `name` if given, else `$COURSE_PROFILE`, else gpu/cpu by hardware."""
    name = name or os.environ.get(PROFILE_ENV_VAR) or ("gpu" if torch.cuda.is_available() else "cpu")
    if name not in PROFILES:
        raise ValueError(f"unknown size profile {name!r} (from the argument or ${PROFILE_ENV_VAR}); "
                         f"allowed: {', '.join(PROFILES)}")
    return PROFILES[name]


def seed_everything(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Seed Python, NumPy and torch, and return a torch.Generator on `device` seeded the same.

    Library functions take an explicit `generator`, so passing the returned one makes a
    chapter's randomness reproducible without relying on global state.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator(device=device).manual_seed(seed)

