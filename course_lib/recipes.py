"""Recipes: everything that defines one trained image score model, as frozen dataclasses.

A recipe names the network, the noise process, the loss and the sampler defaults; `train_recipe`
trains it with the course's one training loop, `save_weights` / `load_weights` store the EMA
weights with the recipe's fingerprint, so a file made by one recipe is refused by another.

- `NCSNRecipe`: a noise-conditional score network, a U-Net conditioned on log sigma over a
  geometric ladder, trained with the multi-sigma objective and sampled by annealed Langevin
  dynamics (Song & Ermon, 2019; the rules for sigma_1, the ladder and the step size are Song &
  Ermon, 2020, see `noise_levels`).
- `ScoreSDERecipe`: a score-SDE model, a U-Net conditioned on time that predicts the noise,
  trained with continuous-time denoising score matching under the VP SDE (Song et al., 2021).

The digits recipes are the models the chapters ship weights for (made by
`python -m course_lib.cli weights <name>`, a few minutes to an hour on a laptop CPU). The MNIST
and CIFAR-10 recipes are the full-size versions for a GPU (`python -m course_lib.cli train
<name>`), scaled down from the published models to what one modern GPU trains in minutes (MNIST)
or about an hour (CIFAR-10):

- CIFAR-10 keeps DDPM's network (Ho et al., 2020: 128 channels, multipliers 1, 2, 2, 2, two
  residual blocks per resolution, 32 groups, dropout 0.1 for the VP model; 34.4 M parameters
  here) and its optimizer (lr 2e-4, batch 128, clip 1, EMA 0.9999; NCSNv2's lr 1e-4 and EMA 0.999
  for NCSN), with self-attention at 4x4 only instead of 16x16 and no learning-rate warm-up.
  What is scaled is the length: 100k steps (12.8 M images) instead of DDPM's 800k and score_sde's
  1.3 M, so the samples are good but not the papers' FID. One training image costs 34.3 GFLOP
  (forward and backward, `torch.utils.flop_counter`): 4.4e17 FLOP in all, about 75 minutes at a
  sustained 100 TFLOP/s in bf16 (`benchmarks/gpu_throughput.py` measures the real rate).
- NCSN on CIFAR-10 follows NCSNv2 (Song & Ermon, 2020) in [-1, 1] instead of [0, 1], so its
  sigmas double: sigma_1 = 100, sigma_L = 0.02, and the ratio rule for D = 3072 gives L = 220
  levels (NCSNv2: 232), T = 5 moves per level.
- MNIST has no published score-SDE recipe; it takes the CIFAR-10 layout one size down (64
  channels, multipliers 1, 2, 2 for 28 -> 14 -> 7, 6.1 M parameters, 6.5 GFLOP per training image)
  and 20k steps of batch 128 (43 epochs, 1.7e16 FLOP: minutes). Its NCSN ladder runs from
  sigma_1 = 30, about the largest distance between two MNIST digits in [-1, 1] (a digit holds
  sum p^2 = 88 of ink on average, from MNIST's pixel mean 0.131 and std 0.308, so two with
  disjoint strokes lie 2 sqrt(176) = 27 apart, heavier pairs more), to 0.01 in L = 103 levels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import noise_levels
from .langevin import annealed_langevin
from .losses import dsm_loss, ncsn_loss
from .nets import UNet, UNetConfig
from .parameterization import ScoreFromEps, SigmaConditionedScore
from .sde import VESDE, VPSDE
from .train import TrainConfig, TrainState, train

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FORMAT = 1  # version of the weights file layout


class WeightsUnavailable(RuntimeError):
    """Shipped weights are missing, unreadable or made by another recipe; the message says how
    to make them."""


@dataclass(frozen=True)
class NCSNRecipe:
    """A noise-conditional score network s(x, sigma) = -UNet(x, log sigma) / sigma (technique 3)."""

    name: str                  # names the weights file, <name>.pt
    unet: UNetConfig           # the network; its condition is log sigma (fourier_scale suits that range)
    sigma_max: float           # sigma_1: about the largest distance between two training images (technique 1)
    sigma_min: float           # sigma_L: small against the data's finest detail
    n_levels: int              # L, from the ratio that keeps adjacent levels overlapping (technique 2)
    n_steps_each: int          # Langevin moves per level when sampling (technique 4 picks the step for it)
    train: TrainConfig         # steps, batch, learning rate, EMA (technique 5), seed

    def sigmas(self) -> Tensor:
        """The ladder sigma_1 > ... > sigma_L: (L,) float64, geometric (VESDE.discrete_sigmas)."""
        return VESDE(self.sigma_min, self.sigma_max).discrete_sigmas(self.n_levels)

    def ratio(self) -> float:
        """gamma = sigma_{i-1} / sigma_i of the ladder."""
        return (self.sigma_max / self.sigma_min) ** (1.0 / (self.n_levels - 1))

    def step_size(self) -> float:
        """eps of `annealed_langevin` for n_steps_each moves per level (technique 4)."""
        return noise_levels.annealed_step_size(self.sigma_min, self.ratio(), self.n_steps_each)

    def model(self) -> SigmaConditionedScore:
        """A fresh, untrained score model score_fn(x, sigma)."""
        return SigmaConditionedScore(UNet(self.unet))

    def sde(self) -> VESDE:
        """The VE SDE whose kernel std sigma(t) runs over the ladder's range (NCSN is its discretization)."""
        return VESDE(self.sigma_min, self.sigma_max)

    def time_score(self, model: nn.Module):
        """The model as a time-conditioned score score_fn(x, t) = s(x, sigma(t)) for the SDE samplers."""
        sde = self.sde()
        return lambda x, t: model(x, sde.marginal_std(t))

    def loss(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        """The weighted multi-sigma objective, lambda(sigma) = sigma^2 (`losses.ncsn_loss`)."""
        return ncsn_loss(model, batch, self.sigmas().to(batch.device), generator=generator)

    @torch.no_grad()
    def sample(self, model: nn.Module, n: int, *, generator=None, device=None, callback=None,
               final_denoise: bool = True) -> Tensor:
        """n images by annealed Langevin from N(0, sigma_1^2 I), with the recipe's step size and
        Tweedie's denoising last step: (n, C, H, W)."""
        c, size = self.unet.in_channels, self.unet.image_size
        x = self.sigma_max * torch.randn(n, c, size, size, generator=generator, device=device)
        return annealed_langevin(model, x, self.sigmas().to(device=x.device, dtype=x.dtype),
                                 eps=self.step_size(), n_steps_each=self.n_steps_each,
                                 final_denoise=final_denoise, generator=generator, callback=callback)


@dataclass(frozen=True)
class ScoreSDERecipe:
    """A score-SDE model under the VP SDE: score(x, t) = -UNet(x, t) / sigma(t), the network
    predicting the noise (DDPM's parameterization, `parameterization.ScoreFromEps`)."""

    name: str                  # names the weights file, <name>.pt
    unet: UNetConfig           # the network; its condition is t in [eps, 1]
    beta_min: float            # VP SDE's beta(0)
    beta_max: float            # VP SDE's beta(1)
    train: TrainConfig         # steps, batch, learning rate, EMA, seed

    def sde(self) -> VPSDE:
        return VPSDE(self.beta_min, self.beta_max)

    def model(self) -> ScoreFromEps:
        """A fresh, untrained score model score_fn(x, t)."""
        return ScoreFromEps(UNet(self.unet), self.sde())

    def time_score(self, model: nn.Module):
        """The model itself: it is already a score_fn(x, t)."""
        return model

    def loss(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        """Continuous-time DSM with lambda(t) = sigma(t)^2, the noise-prediction MSE (`losses.dsm_loss`).
        The SDE is the recipe's, so `model` may be wrapped (DistributedDataParallel)."""
        return dsm_loss(model, self.sde(), batch, generator=generator)


Recipe = NCSNRecipe | ScoreSDERecipe

_DIGITS_UNET = dict(image_size=8, in_channels=1, channels=32, channel_mult=(1, 2), num_res_blocks=1,
                    attention=True, fourier_scale=16.0)
# 10k steps (850 epochs of the 1500 training digits): the VP model's Frechet distance stops falling
# there (55.9 at 10k, 57.6 at 20k, mean of two draws of 297 at NFE 20) while its samples move closer
# to training digits (median nearest-neighbour distance 2.01 at 10k, 1.70 at 20k; the test digits' 2.06)
_DIGITS_TRAIN = TrainConfig(steps=10_000, lr=1e-3, batch_size=128, ema_decay=0.999, seed=0)
_DIGITS_GAMMA = noise_levels.geometric_ratio(64)  # 1.361 for D = 8 x 8

# sigma_1 = 10: the largest distance between two of the 1500 training digits is 9.47; T = 5 moves
# per level (NCSNv2's choice) keeps sampling 297 digits to seconds on a CPU; 6k steps (about 12
# minutes on two quiet cores), where the samples' median nearest-neighbour distance to the training
# digits, 2.10, is the test digits' 2.06 (1.80 at 9k, 1.57 at 12k: drifting towards copies) and the
# Frechet distance 42.6 (two draws of 297; 54 at 3k, 39 to 55 at 9k and 12k)
DIGITS_NCSN = NCSNRecipe(
    name="digits-ncsn", unet=UNetConfig(**_DIGITS_UNET), sigma_max=10.0, sigma_min=0.01,
    n_levels=noise_levels.n_levels(10.0, 0.01, _DIGITS_GAMMA), n_steps_each=5,
    train=dataclasses.replace(_DIGITS_TRAIN, steps=6_000))

DIGITS_VP = ScoreSDERecipe(name="digits-vp", unet=UNetConfig(**_DIGITS_UNET), beta_min=0.1, beta_max=20.0,
                           train=_DIGITS_TRAIN)

_MNIST_UNET = dict(image_size=28, in_channels=1, channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                   attention=True, fourier_scale=16.0)
_MNIST_TRAIN = TrainConfig(steps=20_000, lr=2e-4, batch_size=128, ema_decay=0.999, amp=True, seed=0)

MNIST_NCSN = NCSNRecipe(
    name="mnist-ncsn", unet=UNetConfig(**_MNIST_UNET), sigma_max=30.0, sigma_min=0.01,
    n_levels=noise_levels.n_levels(30.0, 0.01, noise_levels.geometric_ratio(784)), n_steps_each=5,
    train=_MNIST_TRAIN)

MNIST_VP = ScoreSDERecipe(name="mnist-vp", unet=UNetConfig(**_MNIST_UNET), beta_min=0.1, beta_max=20.0,
                          train=_MNIST_TRAIN)

_CIFAR10_UNET = dict(image_size=32, in_channels=3, channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                     attention=True, num_groups=32, fourier_scale=16.0)
_CIFAR10_TRAIN = TrainConfig(steps=100_000, lr=2e-4, batch_size=128, ema_decay=0.9999, amp=True, seed=0)

CIFAR10_NCSN = NCSNRecipe(
    name="cifar10-ncsn", unet=UNetConfig(**_CIFAR10_UNET), sigma_max=100.0, sigma_min=0.02,
    n_levels=noise_levels.n_levels(100.0, 0.02, noise_levels.geometric_ratio(3072)), n_steps_each=5,
    train=dataclasses.replace(_CIFAR10_TRAIN, lr=1e-4, ema_decay=0.999))

CIFAR10_VP = ScoreSDERecipe(name="cifar10-vp", unet=UNetConfig(**_CIFAR10_UNET, dropout=0.1), beta_min=0.1,
                            beta_max=20.0, train=_CIFAR10_TRAIN)

ALL = (DIGITS_NCSN, DIGITS_VP, MNIST_NCSN, MNIST_VP, CIFAR10_NCSN, CIFAR10_VP)  # every recipe, in order


# -- training and weights ------------------------------------------------------------------------
def train_recipe(recipe: Recipe, images: Tensor, *, config: TrainConfig | None = None, device=None,
                 progress: bool = True, resume=None, **options) -> TrainState:
    """Train `recipe`'s model on images: (N, C, H, W) in [-1, 1] with `config` (default the
    recipe's own). The initial weights are seeded by config.seed, so the run is reproducible;
    `resume` continues from a checkpoint of `train.save_checkpoint`; `options` go to `train.train`
    (speed, shards, handle_signals, meta, callback)."""
    config = config or recipe.train
    expected = (recipe.unet.in_channels, recipe.unet.image_size, recipe.unet.image_size)
    if not torch.is_tensor(images) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, expected))}) for recipe "
                         f"{recipe.name!r}, got {tuple(getattr(images, 'shape', ()))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = recipe.model()
    return train(model, recipe.loss, images, config, device=device, progress=progress, resume=resume, **options)


def fingerprint(recipe: Recipe) -> str:
    """The recipe as text: a weights file records it, and loading compares it."""
    return repr(recipe)


def weights_path(recipe: Recipe) -> Path:
    """Where the shipped weights of `recipe` live: course_lib/weights/<name>.pt."""
    return WEIGHTS_DIR / f"{recipe.name}.pt"


def save_weights(recipe: Recipe, model: nn.Module, path: str | Path | None = None, **info) -> Path:
    """Write model's state (use the EMA model) with the recipe's fingerprint; `info` adds plain
    numbers (steps, seconds, final loss) to the file. Loads with weights_only=True."""
    path = Path(path) if path is not None else weights_path(recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "recipe": recipe.name, "fingerprint": fingerprint(recipe),
                "state_dict": state, "info": dict(info)}, path)
    return path


def _how_to_make(recipe: Recipe) -> str:
    return f"make it with `python -m course_lib.cli weights {recipe.name}` (see the README)"


def load_weights(recipe: Recipe, path: str | Path | None = None, *, device=None) -> nn.Module:
    """The recipe's model with the weights of `path` (default `weights_path(recipe)`), in eval
    mode on `device`. Raises WeightsUnavailable, saying how to make the file, when it is missing,
    unreadable, or made by another recipe or format."""
    path = Path(path) if path is not None else weights_path(recipe)
    if not path.is_file():
        raise WeightsUnavailable(f"no weights at {path}; {_how_to_make(recipe)}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or corrupt file, or not a torch file at all
        raise WeightsUnavailable(f"{path} is not a readable weights file ({type(err).__name__}); "
                                 f"{_how_to_make(recipe)}") from err
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise WeightsUnavailable(f"{path} has an unknown layout (expected format {FORMAT}); {_how_to_make(recipe)}")
    if saved.get("fingerprint") != fingerprint(recipe):
        raise WeightsUnavailable(f"{path} was made by recipe {saved.get('recipe')!r} with other settings than "
                                 f"{recipe.name!r} has now; {_how_to_make(recipe)}")
    model = recipe.model()
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval().requires_grad_(False)


def weights_info(recipe: Recipe, path: str | Path | None = None) -> dict:
    """The `info` numbers stored with the weights (steps, seconds, final loss, ...)."""
    path = Path(path) if path is not None else weights_path(recipe)
    return dict(torch.load(path, map_location="cpu", weights_only=True).get("info", {}))


def replace_train(recipe: Recipe, **changes) -> Recipe:
    """A copy of the recipe with some TrainConfig fields changed (e.g. steps for a short live run)."""
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, **changes))


def tiny(recipe: Recipe) -> Recipe:
    """`recipe` at test size, named <data set>-tiny-<kind> (mnist-tiny-vp): the same image size,
    channels, resolutions, attention, dropout, SDE and loss, with 8-channel U-Nets, one residual
    block, a 4-level NCSN ladder and 4 training steps of 8 images. Every code path of the recipe
    runs in about a second on a CPU (the tests and `benchmarks/gpu_throughput.py --quick`)."""
    unet = dataclasses.replace(recipe.unet, channels=8, num_res_blocks=1, num_groups=4, n_frequencies=8)
    train = dataclasses.replace(recipe.train, steps=4, batch_size=8, lr=1e-3, ema_decay=0.9, log_every=2, seed=3)
    data, kind = recipe.name.split("-")
    changes = dict(name=f"{data}-tiny-{kind}", unet=unet, train=train)
    if isinstance(recipe, NCSNRecipe):
        changes.update(n_levels=4, n_steps_each=1)
    return dataclasses.replace(recipe, **changes)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def megabytes(model: nn.Module) -> float:
    """Size of the float32 weights in MB (10^6 bytes)."""
    return 4 * parameter_count(model) / 1e6
