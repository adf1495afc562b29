"""The MNIST and CIFAR-10 recipes follow the rules and sizes their docstring states; the feature
classifier of their Frechet distance learns, is cached, and tells a wrong distribution from the
data's own; the run folder's helpers."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from course_lib import image_features, noise_levels, recipes, runs
from course_lib.datasets import ImageData


@pytest.mark.parametrize("recipe, dim, levels", [(recipes.MNIST_NCSN, 784, 103), (recipes.CIFAR10_NCSN, 3072, 220)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_image_ncsn_recipes_follow_the_ncsnv2_rules(recipe, dim, levels):
    assert recipe.n_levels == levels and recipe.ratio() <= noise_levels.geometric_ratio(dim)
    assert 0 < recipe.step_size() < 2 * recipe.sigma_min**2  # a stable Langevin move at the smallest level
    sigmas = recipe.sigmas()
    assert sigmas[0] == pytest.approx(recipe.sigma_max) and sigmas[-1] == pytest.approx(recipe.sigma_min)


def test_cifar10_ncsn_is_ncsnv2_in_the_range_minus_one_to_one():
    # NCSNv2 (CIFAR-10 in [0, 1]): sigma_1 = 50, sigma_L = 0.01; distances double in [-1, 1]
    assert (recipes.CIFAR10_NCSN.sigma_max, recipes.CIFAR10_NCSN.sigma_min) == (2 * 50.0, 2 * 0.01)


@pytest.mark.parametrize("recipe, params, gflop", [(recipes.MNIST_VP, 6.1, 6.5), (recipes.CIFAR10_VP, 34.4, 34.3)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_the_sizes_the_docstring_states(recipe, params, gflop):
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = recipe.model()
        size = recipe.unet.image_size
        x, t = torch.randn(1, recipe.unet.in_channels, size, size), torch.full((1,), 0.5)
    with FlopCounterMode(display=False) as counter:
        model(x, t).sum().backward()
    assert round(recipes.parameter_count(model) / 1e6, 1) == params
    assert round(counter.get_total_flops() / 1e9, 1) == gflop  # one training image, forward and backward
    steps, batch = recipe.train.steps, recipe.train.batch_size
    total = {"mnist-vp": 1.7e16, "cifar10-vp": 4.4e17}[recipe.name]
    assert float(f"{counter.get_total_flops() * steps * batch:.1e}") == total


# -- the feature classifier ----------------------------------------------------------------------
def two_classes(n, seed, only=None):
    """Images whose class is which half is bright: a task a classifier learns in a few steps.
    `only`: every image of that class (a model that lost a mode)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g) if only is None else torch.full((n,), only)
    x = 0.3 * torch.randn(n, 3, 12, 12, generator=g) - 0.5
    x[labels == 0, :, :6] += 1.0
    x[labels == 1, :, 6:] += 1.0
    return ImageData(x, labels, f"halves-{n}")


def test_the_classifier_learns_is_cached_and_separates_a_wrong_distribution(tmp_path, monkeypatch):
    config = image_features.ClassifierConfig(in_channels=3, width=8, feature_dim=16, n_classes=2, steps=40,
                                             batch_size=32)
    train, test = two_classes(400, 0), two_classes(200, 1)
    model = image_features.load_or_train(config, train, tmp_path / "c.pt", device="cpu")
    assert image_features.accuracy(model, test) > 0.95
    monkeypatch.setattr(image_features, "train_classifier", lambda *a, **k: pytest.fail("retrained"))
    again = image_features.load_or_train(config, train, tmp_path / "c.pt", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))

    features = image_features.feature_fn(model)
    reports = [image_features.frechet_report(two_classes(100, 10 + k).images, test.images, train.images, features,
                                             generator=torch.Generator().manual_seed(k)) for k in range(10)]
    assert all(r["n"] == 100 and r["n_test"] == 200 for r in reports)
    # a sample of the data's own law is distributed like the data's own value (both are 100 draws
    # of one law against the same test set): their means over 10 draws agree within 3 standard
    # errors of the difference (the features are close to the class indicator, so both spread
    # with the class proportions' binomial noise)
    fd, fd_data = (torch.tensor([r[key] for r in reports]) for key in ("fd", "fd_data"))
    se = ((fd.var() + fd_data.var()) / len(reports)).sqrt()
    assert abs(fd.mean() - fd_data.mean()) < 3 * se
    # a sample that lost one of the two modes sits far above every draw of the data's own value
    collapsed = image_features.frechet_report(two_classes(100, 30, only=0).images, test.images, train.images,
                                              features, generator=torch.Generator().manual_seed(0))
    assert collapsed["fd"] > 10 * fd_data.max()
    with pytest.raises(ValueError, match="fewer than the 500 samples"):
        image_features.frechet_report(two_classes(500, 3).images, test.images, train.images, features)


# -- the run folder ------------------------------------------------------------------------------
def test_uint8_round_trip_and_checkpoint_pruning(tmp_path):
    x = torch.rand(5, 3, 4, 4) * 2 - 1
    pixels = runs.to_uint8(x)
    assert pixels.shape == (5, 4, 4, 3) and pixels.dtype == np.uint8
    torch.testing.assert_close(runs.from_uint8(pixels), x, rtol=0, atol=0.5 / 127.5 + 1e-6)  # half a level
    for step in (10, 200, 3000):
        (tmp_path / f"step_{step:07d}.pt").write_bytes(b"")
    runs.prune_checkpoints(tmp_path, keep=2)
    assert runs.latest_checkpoint(tmp_path).name == "step_0003000.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000200.pt", "step_0003000.pt"]
