"""Recipes: training is reproducible from the seed, weights round-trip with weights_only loading,
and a missing, corrupt or foreign weights file gets a message that says how to make it."""

import dataclasses

import pytest
import torch

from course_lib import cli, recipes
from course_lib.nets import UNetConfig
from course_lib.train import TrainConfig

TINY_UNET = UNetConfig(image_size=8, channels=8, channel_mult=(1, 2), attention=False, num_groups=4)
TINY_TRAIN = TrainConfig(steps=3, batch_size=8, ema_decay=0.9, seed=3)
TINY_NCSN = dataclasses.replace(recipes.DIGITS_NCSN, name="tiny-ncsn", unet=TINY_UNET, n_levels=5,
                                n_steps_each=2, train=TINY_TRAIN)
TINY_VP = dataclasses.replace(recipes.DIGITS_VP, name="tiny-vp", unet=TINY_UNET, train=TINY_TRAIN)


def images(n=32):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("recipe", [TINY_NCSN, TINY_VP], ids=lambda r: r.name)
def test_training_is_reproducible_and_weights_round_trip(recipe, tmp_path):
    a = recipes.train_recipe(recipe, images(), device="cpu", progress=False)
    b = recipes.train_recipe(recipe, images(), device="cpu", progress=False)
    assert a.loss_history == b.loss_history
    path = recipes.save_weights(recipe, a.ema_model, tmp_path / "w.pt", steps=a.step)
    loaded = recipes.load_weights(recipe, path)
    x, c = images(4), torch.full((4,), 0.3)
    torch.testing.assert_close(loaded(x, c), a.ema_model.cpu()(x, c), rtol=0, atol=0)
    assert recipes.weights_info(recipe, path) == {"steps": 3}
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_digits_recipes_follow_the_ncsnv2_rules():
    r = recipes.DIGITS_NCSN
    sigmas = r.sigmas()
    assert sigmas[0] == pytest.approx(r.sigma_max) and sigmas[-1] == pytest.approx(r.sigma_min)
    assert r.ratio() <= recipes.noise_levels.geometric_ratio(64)  # adjacent levels overlap enough
    ratios = sigmas[:-1] / sigmas[1:]
    torch.testing.assert_close(ratios, torch.full_like(ratios, r.ratio()))
    assert 0 < r.step_size() < 2 * r.sigma_min**2  # a stable move at the smallest level


def test_ncsn_sample_has_image_shape():
    model = TINY_NCSN.model()
    x = TINY_NCSN.sample(model, 3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()


def test_missing_corrupt_and_foreign_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(recipes.WeightsUnavailable, match="python -m course_lib.cli weights tiny-vp"):
        recipes.load_weights(TINY_VP, tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(recipes.WeightsUnavailable, match="not a readable weights file"):
        recipes.load_weights(TINY_VP, corrupt)
    other = recipes.save_weights(TINY_NCSN, TINY_NCSN.model(), tmp_path / "ncsn.pt")
    with pytest.raises(recipes.WeightsUnavailable, match="made by recipe 'tiny-ncsn'"):
        recipes.load_weights(TINY_VP, other)
    changed = dataclasses.replace(TINY_NCSN, sigma_max=20.0)
    with pytest.raises(recipes.WeightsUnavailable, match="other settings"):
        recipes.load_weights(changed, other)


def test_train_recipe_refuses_images_of_another_shape():
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 8, 8\)"):
        recipes.train_recipe(TINY_VP, torch.zeros(4, 1, 28, 28))


def test_cli_names_the_bad_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["weights", "no-such-recipe"])
    assert "invalid choice: 'no-such-recipe'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["weights", "digits-vp", "--steps", "0"])
    assert "--steps must be a positive integer" in capsys.readouterr().err


def test_cli_trains_and_writes_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.RECIPES, "digits-tiny", dataclasses.replace(TINY_VP, name="digits-tiny"))
    out = tmp_path / "w.pt"
    assert cli.main(["weights", "digits-tiny", "--out", str(out), "--device", "cpu"]) == 0
    assert "wrote" in capsys.readouterr().out
    recipes.load_weights(cli.RECIPES["digits-tiny"], out)


def test_cli_weights_of_another_step_count_are_another_recipe(tmp_path, monkeypatch, capsys):
    """--steps that differ from the recipe's: never over the shipped file, and the file's
    fingerprint records the steps, so it does not load as the recipe's own weights."""
    tiny = dataclasses.replace(TINY_VP, name="digits-tiny")
    monkeypatch.setitem(cli.RECIPES, "digits-tiny", tiny)
    assert cli.main(["weights", "digits-tiny", "--steps", "2", "--device", "cpu"]) == 2
    assert "--steps 2 is not digits-tiny's 3: give --out" in capsys.readouterr().err
    out = tmp_path / "w.pt"
    assert cli.main(["weights", "digits-tiny", "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert "not the recipe's 3" in capsys.readouterr().out
    with pytest.raises(recipes.WeightsUnavailable, match="other settings"):
        recipes.load_weights(tiny, out)
    recipes.load_weights(recipes.replace_train(tiny, steps=2), out)
