"""Shapes, conditioning and configuration checks of the score networks."""

import dataclasses

import pytest
import torch

from course_lib.nets import MLPConfig, ScoreMLP, UNet, UNetConfig


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


CASES = [
    ("mlp 2-D", lambda: ScoreMLP(MLPConfig(dim=2)), (2,)),
    ("unet digits 1x8x8", lambda: UNet(UNetConfig(image_size=8, channel_mult=(1, 2))), (1, 8, 8)),
    ("unet mnist 1x28x28", lambda: UNet(UNetConfig(image_size=28, channel_mult=(1, 2, 2))), (1, 28, 28)),
    ("unet cifar 3x32x32", lambda: UNet(UNetConfig(image_size=32, in_channels=3, channels=16)), (3, 32, 32)),
]


@pytest.mark.parametrize("name, make, shape", CASES, ids=[c[0] for c in CASES])
def test_output_shape_and_conditioning(name, make, shape):
    torch.manual_seed(0)
    model = make().eval()
    print(f"{name}: {n_params(model):,} parameters")
    x = torch.randn(3, *shape)
    c = torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        out = model(x, c)
        assert out.shape == x.shape and torch.isfinite(out).all()
        # the same x at another noise level: the output must change (float32 noise is ~1e-7,
        # a genuine dependence through the embedding moves outputs by ~1e-2 at initialization)
        other = model(x, c + 0.3)
        assert (out - other).abs().amax() > 1e-3
        # a float is broadcast to every sample
        torch.testing.assert_close(model(x, 0.5)[1], out[1], rtol=1e-5, atol=1e-6)


def test_samples_are_processed_independently():
    # GroupNorm and attention act within a sample: sample 0's output ignores the rest of the batch
    torch.manual_seed(0)
    model = UNet(UNetConfig(image_size=8, channel_mult=(1, 2))).eval()
    x, c = torch.randn(4, 1, 8, 8), torch.rand(4)
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1], c[:1]), model(x, c)[:1], rtol=1e-4, atol=1e-5)


def test_unet_without_attention_and_with_dropout_runs_and_trains():
    model = UNet(UNetConfig(image_size=8, channel_mult=(1, 2), attention=False, dropout=0.1, num_res_blocks=2))
    x = torch.randn(2, 1, 8, 8)
    model(x, torch.rand(2)).pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_mlp_with_log_sigma_conditioning_in_float64():
    model = ScoreMLP(MLPConfig(dim=3, width=32, depth=1, fourier_scale=1.0)).to(torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    assert model(x, torch.log(torch.full((5,), 0.3, dtype=torch.float64))).dtype == torch.float64


@pytest.mark.parametrize("field, value", [
    ("image_size", 30),          # 30 -> 15 -> 7.5: not divisible by 2^2
    ("channel_mult", ()),
    ("channel_mult", [1, 2]),
    ("num_groups", 5),           # 32 channels are not split into 5 groups
    ("dropout", 1.0),
    ("num_res_blocks", 0),
])
def test_bad_unet_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        UNetConfig(**{field: value})


def test_num_groups_must_divide_the_base_width_too():
    # widths 24 and 48 split into 8 groups, but the 12-channel first features (and the up path's
    # concatenations with them, 24 + 12 = 36) do not: a clear config error, not one from GroupNorm
    with pytest.raises(ValueError, match="num_groups"):
        UNetConfig(image_size=8, channels=12, channel_mult=(2, 4), num_groups=8)
    UNet(UNetConfig(image_size=8, channels=12, channel_mult=(2, 4), num_groups=4))  # 12, 24, 48, 36, 72


def test_each_block_projects_the_embedding_after_a_silu():
    # embed ends in a Linear and each block's projection is another one: without a nonlinearity in
    # between the two would collapse into one linear map (DDPM applies the nonlinearity there too)
    model = UNet(UNetConfig(image_size=8, channel_mult=(1, 2))).eval()
    x, c = torch.randn(2, 1, 8, 8), torch.tensor([0.2, 0.7])
    seen = []
    hooks = [m.emb.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
             for m in model.modules() if hasattr(m, "emb")]
    with torch.no_grad():
        model(x, c)
        expected = torch.nn.functional.silu(model.embed(c))
    for h in hooks:
        h.remove()
    assert len(seen) == len(hooks) > 0
    for e in seen:
        torch.testing.assert_close(e, expected, rtol=0, atol=0)


@pytest.mark.parametrize("field, value", [("dim", 0), ("width", 0), ("depth", 0), ("fourier_scale", -1.0)])
def test_bad_mlp_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        MLPConfig(**{field: value})


def test_wrong_input_shape_names_x():
    with pytest.raises(ValueError, match="x"):
        UNet(UNetConfig(image_size=8, channel_mult=(1, 2)))(torch.randn(2, 1, 16, 16), torch.rand(2))
    with pytest.raises(ValueError, match="x"):
        ScoreMLP(MLPConfig(dim=2))(torch.randn(2, 3), torch.rand(2))


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        UNetConfig().channels = 8
