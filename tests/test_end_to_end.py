"""Train, then sample: a DSM-trained MLP on a 2-D mixture, at the `ci` size, draws samples
whose sliced W2 to fresh true samples is within a few times the noise floor."""

import time

import torch

from course_lib.distributions import GaussianMixture
from course_lib.losses import dsm_loss
from course_lib.metrics import noise_floor, sliced_wasserstein
from course_lib.nets import MLPConfig, ScoreMLP
from course_lib.parameterization import ScoreFromEps
from course_lib.runtime import get_profile
from course_lib.samplers import heun_ode
from course_lib.sde import VPSDE
from course_lib.train import TrainConfig, train

SDE = VPSDE()
MIXTURE = GaussianMixture([0.2, 0.3, 0.5], [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]],
                          [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.4]], [[0.25, 0.0], [0.0, 0.25]]])


def _sample(score_fn, n, generator):
    ts = torch.linspace(SDE.T, SDE.eps, 51)  # Heun: 100 score evaluations
    with torch.no_grad():
        return heun_ode(score_fn, SDE, SDE.prior_sampling((n, 2), generator=generator), ts)


def test_dsm_trained_mlp_samples_within_a_few_noise_floors():
    profile = get_profile("ci")
    torch.manual_seed(0)
    model = ScoreFromEps(ScoreMLP(MLPConfig(width=64, depth=2)), SDE)
    config = TrainConfig(steps=profile.train_steps, batch_size=profile.batch_size, lr=3e-3, ema_decay=None)
    gen = torch.Generator().manual_seed(1)
    untrained = _sample(model, profile.n_samples, gen)

    start = time.perf_counter()
    state = train(model, lambda m, b, g: dsm_loss(m, SDE, b, generator=g),
                  lambda n, generator: MIXTURE.sample(n, generator=generator), config,
                  device="cpu", progress=False)
    seconds = time.perf_counter() - start
    samples = _sample(state.model, profile.n_samples, gen)

    def sw2(x, y):
        return float(sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(2)))

    true = MIXTURE.sample(profile.n_samples, generator=gen)
    floor, floor_std = noise_floor(sliced_wasserstein, MIXTURE.sample, profile.n_samples, repeats=10, generator=gen)
    trained_sw2, untrained_sw2 = sw2(samples, true), sw2(untrained, true)
    print(f"\n{config.steps} DSM steps in {seconds:.1f} s; sliced W2 to true samples (n={profile.n_samples}): "
          f"trained {trained_sw2:.3f}, untrained {untrained_sw2:.3f}, "
          f"noise floor {floor:.3f} +- {floor_std:.3f}")
    # "within a few times the floor": exact sampling scores floor +- std (~0.10 +- 0.04 here);
    # the trained model measured 0.15-0.18 over three seeds, the untrained one far above.
    # Three floors separates the two and leaves room for the floor's own spread.
    assert trained_sw2 < 3 * floor
    assert untrained_sw2 > 3 * floor
