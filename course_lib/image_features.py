"""A Frechet distance for MNIST- and CIFAR-10-sized images, in the features of a classifier that the
library trains itself (nothing is downloaded).

FID (Heusel et al., 2017) compares Gaussians fit to Inception-v3 features; Inception's weights
are a download and were trained on ImageNet. As for the 8x8 digits (`digits_classifier`), the
course trains its own feature extractor instead: `ImageClassifier`, a small all-convolutional
network trained on the data set's training split with a fixed seed. Its numbers are therefore
not comparable with published FIDs, only with each other: compare a model's distance with the
data's own value, the distance between real images of the same count (`frechet_report`).

A trained classifier is cached in one file per data set and settings (`load_or_train`), written
with its settings, read back with weights_only=True and retrained when they differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .datasets import ImageData
from .digits_classifier import frechet_distance
from .utils import append_dims


@dataclass(frozen=True)
class ClassifierConfig:
    """The feature extractor and how it is trained."""

    in_channels: int = 1     # C of the images (N, C, H, W)
    width: int = 64          # channels of the first stage; the stages have width, 2 width, 4 width
    feature_dim: int = 128   # F: the penultimate layer, whose activations the distance compares
    n_classes: int = 10      # labels 0 .. n_classes - 1
    steps: int = 2_000       # Adam steps of cross-entropy training
    batch_size: int = 256    # images per step
    lr: float = 2e-3         # Adam's learning rate
    seed: int = 0            # initial weights and batch order

    def __post_init__(self):
        for name in ("in_channels", "width", "feature_dim", "n_classes", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a number > 0, got {self.lr!r}")


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with GroupNorm and SiLU, the second with stride 2 (H -> ceil(H / 2))."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


class ImageClassifier(nn.Module):
    """Three convolutional stages, global average pooling, an F-wide feature layer, the logits.
    Any image size: 28x28 ends at 4x4, 32x32 at 4x4."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(_stage(config.in_channels, w), _stage(w, 2 * w), _stage(2 * w, 4 * w),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, config.feature_dim),
                                  nn.SiLU())
        self.head = nn.Linear(config.feature_dim, config.n_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations: (B, F) for images x: (B, C, H, W) in [-1, 1]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits: (B, n_classes)."""
        return self.head(self.body(x))


def train_classifier(config: ClassifierConfig, data: ImageData, *, device=None) -> ImageClassifier:
    """Train an ImageClassifier on `data` (images (N, C, H, W) in [-1, 1], labels) with Adam and
    cross-entropy, random horizontal flips for colour images; returns it frozen, in eval mode."""
    if data.images.shape[1] != config.in_channels:
        raise ValueError(f"data has {data.images.shape[1]} channels but config.in_channels is {config.in_channels}")
    device = torch.device(device) if device is not None else data.images.device
    images, labels = data.images.to(device), data.labels.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ImageClassifier(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    with torch.enable_grad():
        for _ in range(config.steps):
            idx = torch.randint(0, len(labels), (config.batch_size,), generator=generator).to(device)
            x = images[idx]
            if config.in_channels == 3:  # mirror half the batch: CIFAR's classes are left-right symmetric
                flip = torch.rand(len(idx), generator=generator).to(device) < 0.5
                x = torch.where(append_dims(flip, x.ndim), x.flip(-1), x)
            loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageData, batch_size: int = 1000) -> float:
    """Share of `data` whose predicted class is its label."""
    device = next(model.parameters()).device
    hits = sum(int((model(x.to(device)).argmax(1) == y.to(device)).sum())
               for x, y in zip(data.images.split(batch_size), data.labels.split(batch_size)))
    return hits / len(data)


def feature_fn(model: nn.Module, batch_size: int = 1000) -> Callable[[Tensor], Tensor]:
    """images (N, C, H, W) -> model.features (N, F), in batches on the model's device, no gradients."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def features(images: Tensor) -> Tensor:
        return torch.cat([model.features(b.to(device)).float() for b in images.split(batch_size)])

    return features


def load_or_train(config: ClassifierConfig, data: ImageData, path: str | Path, *, device=None) -> ImageClassifier:
    """The classifier cached at `path` when it was trained with `config` on a data set of the
    same name and size; otherwise train it (`train_classifier`) and write it there."""
    path = Path(path)
    stamp = {"config": asdict(config), "data": data.name, "n": len(data)}
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable: retrain over it
            saved = {}
        if isinstance(saved, dict) and saved.get("stamp") == stamp:
            model = ImageClassifier(config)
            model.load_state_dict(saved["state_dict"])
            return model.to(device or data.images.device).eval().requires_grad_(False)
    model = train_classifier(config, data, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"stamp": stamp, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, path)
    return model


def frechet_report(samples: Tensor, test: Tensor, train: Tensor, features: Callable[[Tensor], Tensor], *,
                   generator: torch.Generator | None = None) -> dict:
    """The Frechet distance of `samples` (N, C, H, W) to the test images, beside the data's own
    value: that of N training images drawn without replacement (`generator`) to the same test
    images, the distance a perfect model would show at this N (both are biased upwards at finite
    N, alike). Returns {"fd": ..., "fd_data": ..., "n": N, "n_test": M}."""
    n = samples.shape[0]
    if train.shape[0] < n:
        raise ValueError(f"the training split holds {train.shape[0]} images, fewer than the {n} samples; "
                         f"evaluate at most {train.shape[0]} samples")
    real = train[torch.randperm(train.shape[0], generator=generator)[:n].to(train.device)]
    test_features = features(test)
    fd = frechet_distance(features(samples), test_features)
    fd_data = frechet_distance(features(real), test_features)
    return {"fd": float(fd), "fd_data": float(fd_data), "n": n, "n_test": int(test.shape[0])}
