"""Image data for the image chapters, as float tensors `(N, C, H, W)` scaled to [-1, 1].

- `load_digits`: scikit-learn's 8x8 handwritten digits (1797 images, bundled with
  scikit-learn, so it works offline and in CI).
- `load_mnist`, `load_cifar10`: through torchvision where it is installed and the files can
  be found or downloaded (Colab). Otherwise they raise `DatasetUnavailable`, whose message
  points to `load_digits`.

Every loader returns an `ImageData(images, labels, name)`: `data.images` is what a model
trains on, `data.labels` what a classifier or a conditional model needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

OFFLINE_HINT = "use course_lib.datasets.load_digits() (8x8 digits shipped with scikit-learn, no download)"


class DatasetUnavailable(RuntimeError):
    """A data set cannot be loaded here (torchvision missing or broken, files absent, no network)."""


@dataclass(frozen=True)
class ImageData:
    """A labelled image data set."""

    images: Tensor  # (N, C, H, W) float, pixel values scaled to [-1, 1]
    labels: Tensor  # (N,) int64 class indices
    name: str       # e.g. "digits", "mnist-train"

    def __len__(self) -> int:
        return self.images.shape[0]


def scale_images(pixels, max_value: float, *, device=None, dtype=torch.float32) -> Tensor:
    """Map raw pixels in [0, max_value] to a float tensor in [-1, 1]: x = 2 p / max_value - 1.

    pixels: (N, H, W) grey images or (N, H, W, C) channels-last images (numpy or torch,
    any numeric dtype, e.g. uint8 with max_value=255). Returns (N, C, H, W) with C = 1 for
    grey images, on `device` with `dtype`.
    """
    pixels = torch.as_tensor(np.asarray(pixels) if not torch.is_tensor(pixels) else pixels)
    if pixels.ndim not in (3, 4) or pixels.shape[0] < 1:
        raise ValueError(f"pixels must have shape (N, H, W) or (N, H, W, C) with N >= 1, got {tuple(pixels.shape)}")
    if not (isinstance(max_value, (int, float)) and max_value > 0):
        raise ValueError(f"max_value must be a number > 0, got {max_value!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > max_value:
        raise ValueError(f"pixels must lie in [0, max_value={max_value:g}], got values in [{low:g}, {high:g}]")
    x = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)
    x = x.to(device=device, dtype=dtype)
    return (2.0 / max_value) * x - 1.0


def _labels(targets, device) -> Tensor:
    return torch.as_tensor(np.asarray(targets), dtype=torch.int64, device=device)


def load_digits(*, device=None, dtype=torch.float32) -> ImageData:
    """scikit-learn's handwritten digits: images (1797, 1, 8, 8) in [-1, 1], labels 0..9.

    The raw pixels are 4x4-block counts in 0..16 (Alpaydin and Kaynak, UCI Optical
    Recognition of Handwritten Digits); they are scaled by `scale_images(., 16)`.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    raw = sklearn_digits()
    images = scale_images(raw.images, 16.0, device=device, dtype=dtype)
    return ImageData(images, _labels(raw.target, device), "digits")


def _torchvision_datasets():
    """Import torchvision.datasets, turning any failure into a DatasetUnavailable."""
    try:
        import torchvision.datasets as tv_datasets
    except Exception as err:  # ImportError, or a broken build failing with OSError / RuntimeError
        raise DatasetUnavailable(
            f"torchvision is not installed or failed to import ({type(err).__name__}: {err}); "
            f"install a torchvision matching your torch, or {OFFLINE_HINT}"
        ) from err
    return tv_datasets


def _open_torchvision(cls, root, train: bool, download: bool):
    """Instantiate a torchvision data set class, turning a missing file or download error into
    a DatasetUnavailable."""
    try:
        return cls(root=str(root), train=train, download=download)
    except Exception as err:  # RuntimeError "Dataset not found", URLError / OSError while downloading
        raise DatasetUnavailable(
            f"{cls.__name__} could not be loaded from {str(root)!r} with download={download} "
            f"({type(err).__name__}: {err}); pass download=True where the network is reachable, or {OFFLINE_HINT}"
        ) from err


def load_mnist(root, *, train: bool = True, download: bool = False, device=None, dtype=torch.float32) -> ImageData:
    """MNIST through torchvision: images (N, 1, 28, 28) in [-1, 1], labels 0..9.

    N = 60000 (train) or 10000 (test). Raises DatasetUnavailable (naming `load_digits`)
    when torchvision or the files are not available.
    """
    split = "train" if train else "test"
    ds = _open_torchvision(_torchvision_datasets().MNIST, root, train, download)
    images = scale_images(ds.data, 255.0, device=device, dtype=dtype)  # ds.data: (N, 28, 28) uint8
    return ImageData(images, _labels(ds.targets, device), f"mnist-{split}")


def load_cifar10(root, *, train: bool = True, download: bool = False, device=None, dtype=torch.float32) -> ImageData:
    """CIFAR-10 through torchvision: images (N, 3, 32, 32) in [-1, 1], labels 0..9.

    N = 50000 (train) or 10000 (test). Raises DatasetUnavailable (naming `load_digits`)
    when torchvision or the files are not available.
    """
    split = "train" if train else "test"
    ds = _open_torchvision(_torchvision_datasets().CIFAR10, root, train, download)
    images = scale_images(ds.data, 255.0, device=device, dtype=dtype)  # ds.data: (N, 32, 32, 3) uint8
    return ImageData(images, _labels(ds.targets, device), f"cifar10-{split}")


def to_unit_range(x: Tensor) -> Tensor:
    """Map model-range images in [-1, 1] back to [0, 1] for display, clipping overshoot."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)
