"""Tests of course_lib.datasets: the digits loader, the pixel conversion, and the torchvision
paths with a stand-in torchvision module (no network, no files)."""

import sys
import types

import numpy as np
import pytest
import torch

from course_lib import datasets
from course_lib.datasets import DatasetUnavailable, ImageData, load_cifar10, load_digits, load_mnist, scale_images


def test_load_digits_shape_range_and_labels():
    from sklearn.datasets import load_digits as sklearn_digits

    data = load_digits()
    raw = sklearn_digits()
    assert isinstance(data, ImageData) and data.name == "digits" and len(data) == 1797
    assert data.images.shape == (1797, 1, 8, 8) and data.images.dtype == torch.float32
    assert data.labels.shape == (1797,) and data.labels.dtype == torch.int64
    # pixels 0..16 map affinely to [-1, 1]: x = p / 8 - 1, exact in float32 (p / 8 is a power-of-two scaling)
    expected = torch.as_tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    assert torch.equal(data.images, expected)
    assert float(data.images.min()) == -1.0 and float(data.images.max()) == 1.0
    assert torch.equal(data.labels, torch.as_tensor(raw.target))
    assert torch.equal(torch.unique(data.labels), torch.arange(10))


def test_load_digits_dtype():
    data = load_digits(dtype=torch.float64)
    assert data.images.dtype == torch.float64


def test_scale_images_grey_uint8():
    pixels = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)  # (1, 2, 2)
    x = scale_images(pixels, 255)
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    # 2 p / 255 - 1 for p = 0, 255, 51, 102; float32 round-off of a few ulp
    expected = torch.tensor([[[[-1.0, 1.0], [-0.6, -0.2]]]])
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)


def test_scale_images_channels_last_to_nchw():
    pixels = torch.arange(2 * 3 * 4 * 3, dtype=torch.uint8).reshape(2, 3, 4, 3)  # (N, H, W, C)
    x = scale_images(pixels, 255, dtype=torch.float64)
    assert x.shape == (2, 3, 3, 4)
    for n, c, h, w in [(0, 0, 0, 0), (1, 2, 2, 3), (0, 1, 2, 1), (1, 0, 1, 2)]:
        assert float(x[n, c, h, w]) == pytest.approx(2 * int(pixels[n, h, w, c]) / 255 - 1, abs=1e-15)


@pytest.mark.parametrize("pixels, match", [
    (np.zeros((4, 4), dtype=np.uint8), "pixels"),
    (np.zeros((1, 2, 2, 3, 1), dtype=np.uint8), "pixels"),
    (np.full((1, 2, 2), 17.0), r"pixels must lie in \[0, max_value=16\]"),
    (np.full((1, 2, 2), -1.0), "pixels must lie"),
])
def test_scale_images_rejects_bad_pixels(pixels, match):
    with pytest.raises(ValueError, match=match):
        scale_images(pixels, 16)


def test_scale_images_rejects_bad_max_value_and_dtype():
    with pytest.raises(ValueError, match="max_value"):
        scale_images(np.zeros((1, 2, 2)), 0)
    with pytest.raises(ValueError, match="dtype"):
        scale_images(np.zeros((1, 2, 2)), 1, dtype=torch.int64)


@pytest.mark.parametrize("loader", [load_mnist, load_cifar10])
def test_missing_torchvision_names_the_offline_alternative(loader, monkeypatch, tmp_path):
    # a None entry in sys.modules makes `import torchvision...` raise ImportError
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(DatasetUnavailable, match="load_digits") as info:
        loader(tmp_path)
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, ImportError)


class _FakeMNIST:
    """Stands in for torchvision.datasets.MNIST: uint8 (N, 28, 28) tensor data, tensor targets."""

    def __init__(self, root, train, download):
        self.args = (root, train, download)
        self.data = torch.stack([torch.full((28, 28), v, dtype=torch.uint8) for v in (0, 255, 51)])
        self.targets = torch.tensor([3, 1, 4])


class _FakeCIFAR10:
    """Stands in for torchvision.datasets.CIFAR10: numpy uint8 (N, 32, 32, 3) data, list targets."""

    def __init__(self, root, train, download):
        self.data = np.zeros((2, 32, 32, 3), dtype=np.uint8)
        self.data[:, :, :, 2] = 255  # blue channel saturated
        self.targets = [7, 9]


class _Missing:
    def __init__(self, root, train, download):
        raise RuntimeError("Dataset not found. You can use download=True to download it")


def _install_fake_torchvision(monkeypatch, mnist, cifar):
    tv = types.ModuleType("torchvision")
    tv.datasets = types.ModuleType("torchvision.datasets")
    tv.datasets.MNIST, tv.datasets.CIFAR10 = mnist, cifar
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", tv.datasets)


def test_load_mnist_through_torchvision(monkeypatch, tmp_path):
    _install_fake_torchvision(monkeypatch, _FakeMNIST, _FakeCIFAR10)
    data = load_mnist(tmp_path, train=False)
    assert data.name == "mnist-test" and data.images.shape == (3, 1, 28, 28)
    # constant images of 0, 255, 51 -> -1, 1, 2 * 51 / 255 - 1 = -0.6 (float32 round-off)
    torch.testing.assert_close(data.images.mean(dim=(1, 2, 3)), torch.tensor([-1.0, 1.0, -0.6]), rtol=0, atol=1e-6)
    assert torch.equal(data.labels, torch.tensor([3, 1, 4]))


def test_load_cifar10_through_torchvision(monkeypatch, tmp_path):
    _install_fake_torchvision(monkeypatch, _FakeMNIST, _FakeCIFAR10)
    data = load_cifar10(tmp_path)
    assert data.name == "cifar10-train" and data.images.shape == (2, 3, 32, 32)
    # channels-last -> NCHW: red and green at -1, blue at +1 (exact: 0 and 255 map to -1 and 1)
    assert torch.equal(data.images[:, :2], torch.full((2, 2, 32, 32), -1.0))
    assert torch.equal(data.images[:, 2], torch.ones(2, 32, 32))
    assert data.labels.tolist() == [7, 9]


@pytest.mark.parametrize("loader", [load_mnist, load_cifar10])
def test_missing_files_name_the_offline_alternative(loader, monkeypatch, tmp_path):
    _install_fake_torchvision(monkeypatch, _Missing, _Missing)
    with pytest.raises(DatasetUnavailable, match="load_digits") as info:
        loader(tmp_path, download=False)
    assert "download=True" in str(info.value)


def test_to_unit_range_inverts_scaling_and_clips():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.2])
    assert torch.equal(datasets.to_unit_range(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
