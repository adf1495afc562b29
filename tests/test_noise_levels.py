"""NCSNv2's rules for the noise ladder and the step size, against closed forms, Monte Carlo and
the paper's own CIFAR-10 setting."""

import math

import pytest
import torch

from course_lib import noise_levels as nl
from course_lib.langevin import annealed_langevin


def test_max_pairwise_distance_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 4, 4, generator=g)
    brute = torch.cdist(x.flatten(1).double(), x.flatten(1).double()).max().item()
    assert nl.max_pairwise_distance(x, block=64) == pytest.approx(brute, rel=1e-12)
    with pytest.raises(ValueError, match="N >= 2"):
        nl.max_pairwise_distance(x[:1])


@pytest.mark.parametrize("dim", [64, 784, 3072])
def test_geometric_ratio_gives_the_requested_shell_overlap(dim):
    gamma = nl.geometric_ratio(dim)
    assert gamma > 1 and nl.shell_overlap(gamma, dim) == pytest.approx(0.5, abs=1e-9)
    assert nl.geometric_ratio(dim, overlap=0.3) > gamma  # less overlap, a coarser ladder


def test_shell_overlap_matches_monte_carlo_in_high_dimension():
    """P(| ||x|| - sigma_{i-1} sqrt(D) | <= 3 sigma_{i-1} / sqrt(2)) for x ~ N(0, sigma_i^2 I): the
    normal approximation of the chi law is within 0.01 at D = 784 (checked at n = 20000: Monte
    Carlo SE 0.0035)."""
    dim, gamma, n = 784, 1.08, 20_000
    g = torch.Generator().manual_seed(1)
    norms = torch.randn(n, dim, generator=g, dtype=torch.float64).norm(dim=1)  # sigma_i = 1
    inside = ((norms - gamma * math.sqrt(dim)).abs() <= 3 * gamma / math.sqrt(2)).double().mean().item()
    assert inside == pytest.approx(nl.shell_overlap(gamma, dim), abs=0.01 + 4 * 0.0035)


def test_geometric_ratio_refuses_low_dimension():
    with pytest.raises(ValueError, match="dim must be an integer >= 5"):
        nl.geometric_ratio(2)


def test_n_levels_covers_the_range_with_at_most_that_ratio():
    gamma = nl.geometric_ratio(64)
    levels = nl.n_levels(10.0, 0.01, gamma)
    assert (10.0 / 0.01) ** (1 / (levels - 1)) <= gamma < (10.0 / 0.01) ** (1 / (levels - 2))
    with pytest.raises(ValueError, match="gamma must be"):
        nl.n_levels(10.0, 0.01, 1.0)


def test_step_size_reproduces_ncsnv2_cifar10():
    """NCSNv2's CIFAR-10 setting: sigma_1 = 50, sigma_L = 0.01, L = 232, T = 5 and their
    epsilon 6.2e-6 in the convention x + eps s + sqrt(2 eps) z, i.e. half of ours."""
    gamma = (50 / 0.01) ** (1 / 231)
    eps = nl.annealed_step_size(0.01, gamma, 5)
    assert eps / 2 == pytest.approx(6.2e-6, rel=0.01)


def test_level_variance_ratio_matches_annealed_langevin_on_a_point_mass():
    """Data at 0: p_sigma = N(0, sigma^2 I) with score -x / sigma^2, the case the rule assumes.
    Start each level at variance (gamma sigma_i)^2 and run the library's sampler for one level."""
    sigma_min, gamma, steps = 0.1, 1.4, 7
    eps = nl.annealed_step_size(sigma_min, gamma, steps)
    sigma_i = sigma_min * gamma**3
    n = 40_000
    g = torch.Generator().manual_seed(2)
    x0 = gamma * sigma_i * torch.randn(n, 1, generator=g, dtype=torch.float64)
    # the sampler's step at level sigma_i is eps sigma_i^2 / sigma_L^2 with sigma_L the ladder's last
    ladder = torch.tensor([sigma_i, sigma_min], dtype=torch.float64)  # only the first level is kept
    kept = []
    annealed_langevin(lambda x, s: -x / s[:, None] ** 2, x0, ladder, eps=eps, n_steps_each=steps,
                      final_denoise=False, generator=g, callback=lambda d: kept.append(d["x"].clone()))
    ratio = kept[0].var().item() / sigma_i**2
    se = ratio * math.sqrt(2 / (n - 1))  # a Gaussian sample variance
    assert ratio == pytest.approx(nl.level_variance_ratio(eps, sigma_min, gamma, steps), abs=4 * se)


def test_step_size_is_the_best_balance():
    gamma, steps = 1.36, 20
    eps = nl.annealed_step_size(0.01, gamma, steps)
    best = abs(nl.level_variance_ratio(eps, 0.01, gamma, steps) - 1)
    for factor in (0.5, 0.9, 1.1, 2.0):
        assert abs(nl.level_variance_ratio(factor * eps, 0.01, gamma, steps) - 1) > best
    with pytest.raises(ValueError, match="n_steps_each"):
        nl.annealed_step_size(0.01, gamma, 0)
