"""Tests of course_lib.metrics and course_lib.digits_classifier against closed forms."""

import math

import pytest
import scipy.linalg
import torch

from course_lib import metrics
from course_lib.digits_classifier import (accuracy, default_digits_classifier, digits_fd, digits_split,
                                          frechet_distance, sqrtm_psd, train_digits_classifier)
from course_lib.distributions import GaussianMixture
from course_lib.metrics import median_bandwidth, mmd_rbf, mode_coverage, noise_floor, sliced_wasserstein


def gen(seed):
    return torch.Generator().manual_seed(seed)


def normal(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=gen(seed), dtype=dtype)


# -- sliced Wasserstein ------------------------------------------------------------------------
def test_sw_of_identical_and_permuted_sets_is_zero():
    x = normal((200, 3), 0)
    perm = torch.randperm(200, generator=gen(1))
    assert float(sliced_wasserstein(x, x, generator=gen(2))) == 0.0
    # sorting makes the distance blind to the order of the samples (float round-off only)
    assert float(sliced_wasserstein(x, x[perm], generator=gen(2))) < 1e-12


def test_sw_in_1d_equals_w2_of_shifted_gaussians():
    # x ~ N(0, 1), y = y' + m with y' ~ N(0, 1) independent. In 1-D every direction is +-1, so
    # SW2^2 = mean (x_(i) - y_(i))^2 = m^2 - 2 m (mean x - mean y') + W2^2(x, y'),
    # i.e. SW2 = m - (mean x - mean y') + O(W2^2(x, y') / m): the error has std sqrt(2 / n)
    # = 0.01 at n = 20000, and E W2^2(x, y') = O(log log n / n) ~ 1e-4 is negligible. Tolerance 5 std.
    n, m = 20_000, 2.0
    x, y = normal((n, 1), 0), normal((n, 1), 1) + m
    value = float(sliced_wasserstein(x, y, n_projections=4, generator=gen(2)))
    assert value == pytest.approx(m, abs=5 * math.sqrt(2 / n))


def test_sw_of_isotropic_shift_is_norm_over_sqrt_dim():
    # With y = x + m (the same points shifted), the sorted projections along theta differ by
    # <theta, m> exactly, so SW2^2 = mean over directions of <theta, m>^2. For theta uniform on
    # the sphere S^{D-1}, <theta, m>^2 / |m|^2 ~ Beta(1/2, (D-1)/2): mean 1/D, and relative
    # variance 2 (D-1) / (D+2). With L directions the relative std of SW2^2 is
    # sqrt(2 (D-1) / ((D+2) L)) = 1.4 % for D = 16, L = 8192. Tolerance 4 std.
    d, n_proj = 16, 8192
    x = normal((32, d), 0)
    m = normal((d,), 1)
    value = sliced_wasserstein(x, x + m, n_projections=n_proj, generator=gen(2)) ** 2
    rel_std = math.sqrt(2 * (d - 1) / ((d + 2) * n_proj))
    assert float(value) == pytest.approx(float(m.pow(2).sum()) / d, rel=4 * rel_std)


def test_sw_flattens_images_and_is_reproducible():
    x, y = normal((50, 1, 2, 2), 0), normal((50, 1, 2, 2), 1)
    a = sliced_wasserstein(x, y, generator=gen(3))
    b = sliced_wasserstein(x.reshape(50, 4), y.reshape(50, 4), generator=gen(3))
    assert a.ndim == 0 and float(a) == float(b)


@pytest.mark.parametrize("x, y, match", [
    (torch.zeros(10, 2), torch.zeros(11, 2), "x and y must hold the same number"),
    (torch.zeros(10, 2), torch.zeros(10, 3), "x and y must have the same sample shape"),
    (torch.zeros(10), torch.zeros(10, 1), "x must be"),
    (torch.zeros(10, 2), [[0.0, 0.0]] * 10, "y must be"),
])
def test_sw_rejects_bad_shapes(x, y, match):
    with pytest.raises(ValueError, match=match):
        sliced_wasserstein(x, y)


def test_sw_rejects_bad_n_projections():
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(torch.zeros(3, 2), torch.zeros(3, 2), n_projections=0)


# -- MMD -----------------------------------------------------------------------------------------
def gaussian_mmd2(delta2, s1, s2, h, d):
    """MMD^2 between N(mu1, s1^2 I) and N(mu2, s2^2 I) in R^d, |mu1 - mu2|^2 = delta2, for the kernel
    exp(-|a - b|^2 / (2 h^2)): E k over a difference Z ~ N(delta, v I) is
    (h^2 / (h^2 + v))^{d/2} exp(-|delta|^2 / (2 (h^2 + v)))."""
    def ek(dl2, v):
        return (h * h / (h * h + v)) ** (d / 2) * math.exp(-dl2 / (2 * (h * h + v)))
    return ek(0.0, 2 * s1**2) + ek(0.0, 2 * s2**2) - 2 * ek(delta2, s1**2 + s2**2)


@pytest.mark.parametrize("shift, s2", [(0.0, 1.0), (0.5, 1.3)])
def test_mmd_is_unbiased(shift, s2):
    # The mean over R independent repeats of MMD_u^2 matches the closed form within 4 standard
    # errors (std of the repeats / sqrt(R)); for equal laws the closed form is 0.
    d, n, repeats, h = 2, 100, 100, 1.0
    g = gen(0)
    values = torch.stack([
        mmd_rbf(torch.randn(n, d, generator=g, dtype=torch.float64),
                shift + s2 * torch.randn(n + 20, d, generator=g, dtype=torch.float64), bandwidth=h)
        for _ in range(repeats)
    ])
    expected = gaussian_mmd2(d * shift**2, 1.0, s2, h, d)
    assert float(values.mean()) == pytest.approx(expected, abs=4 * float(values.std()) / math.sqrt(repeats))
    if shift == 0.0:
        assert bool((values < 0).any())  # unbiased: it scatters on both sides of 0
    else:
        assert expected > 8 * float(values.std()) / math.sqrt(repeats)  # clearly positive


def test_mmd_matches_direct_formula_with_blocks(monkeypatch):
    # The blocked kernel sums equal the textbook double sums (float64 round-off).
    x, y = normal((37, 3), 0), normal((23, 3), 1) + 0.3
    h = 0.8

    def k(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h))

    kxx, kyy = k(x, x), k(y, y)
    direct = ((kxx.sum() - kxx.diagonal().sum()) / (37 * 36) + (kyy.sum() - kyy.diagonal().sum()) / (23 * 22)
              - 2 * k(x, y).mean())
    monkeypatch.setattr(metrics, "_BLOCK_ENTRIES", 50)  # forces blocks of 1 or 2 rows
    assert float(mmd_rbf(x, y, bandwidth=h)) == pytest.approx(float(direct), abs=1e-12)


def test_mmd_median_heuristic_detects_a_shift():
    x, y = normal((500, 2), 0), normal((500, 2), 1) + 1.0
    same = normal((500, 2), 2)
    # for a unit shift the expected MMD^2 (about 0.1 at the median bandwidth ~ 2) is many times
    # the std of MMD_u^2 under equal laws, which is O(1 / n) = O(2e-3)
    assert float(mmd_rbf(x, y)) > 10 * abs(float(mmd_rbf(x, same)))


def test_median_bandwidth_of_known_points():
    # pooled points 0, 1, 3, 6: pair distances 1, 3, 6, 2, 5, 3, lower median 3
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [6.0]])
    assert float(median_bandwidth(x, y)) == 3.0


def test_mmd_far_from_the_origin_in_float32():
    # Two sample sets of one law with std 0.01 around (100, 100). |a|^2 + |b|^2 - 2 a.b would cancel
    # 2e4 to a float32 resolution of ~2e-3, far above the squared distances ~4e-4. The metrics are
    # translation invariant, so they must equal those of the centered points, computed here in
    # float64 from the very same float32 points.
    x = 100.0 + 0.01 * normal((200, 2), 0, torch.float32)
    y = 100.0 + 0.01 * normal((200, 2), 1, torch.float32)
    xc, yc = (x - 100.0).double(), (y - 100.0).double()  # exact: subtracting 100 loses no bits here
    pooled = torch.cat([xc, yc])
    iu = torch.triu_indices(400, 400, offset=1)
    h_ref = torch.cdist(pooled, pooled)[iu[0], iu[1]].median()
    h = median_bandwidth(x, y)
    # float32 round-off of squared distances of the centered points: relative ~1e-6 for typical pairs
    assert float(h) == pytest.approx(float(h_ref), rel=1e-4)
    value = mmd_rbf(x, y)
    reference = mmd_rbf(xc, yc, bandwidth=float(h_ref))
    # kernel sums of 4e4 terms in [0, 1], each term off by ~1e-6 relative (float32, bandwidth off by
    # < 1e-4 relative): the MMD^2 estimate, a difference of O(1) averages, is off by well under 1e-4
    assert float(value) == pytest.approx(float(reference), abs=1e-4)


def test_mmd_rejects_bad_input():
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf(torch.zeros(3, 2), torch.ones(3, 2), bandwidth=-1.0)
    with pytest.raises(ValueError, match="x must hold at least 2"):
        mmd_rbf(torch.zeros(1, 2), torch.ones(3, 2))
    with pytest.raises(ValueError, match="same sample shape"):
        mmd_rbf(torch.zeros(3, 2), torch.ones(3, 3))


# -- noise floor ---------------------------------------------------------------------------------
def test_noise_floor_of_mean_difference_matches_closed_form():
    # metric |mean x - mean y|^2 for two n-samples of N(0, I_d): mean x - mean y ~ N(0, 2/n I_d),
    # so the metric is (2/n) chi^2_d: mean 2 d / n, std (2/n) sqrt(2 d). Tolerance 4 standard errors.
    d, n, repeats = 3, 50, 400

    def metric(x, y):
        return (x.mean(0) - y.mean(0)).pow(2).sum()

    def sample_fn(k, *, generator=None):
        return torch.randn(k, d, generator=generator, dtype=torch.float64)

    mean, std = noise_floor(metric, sample_fn, n, repeats=repeats, generator=gen(0))
    assert mean == pytest.approx(2 * d / n, abs=4 * (2 / n) * math.sqrt(2 * d) / math.sqrt(repeats))
    # a sample std of R draws with kurtosis kappa (3 + 12 / d = 7 for chi^2_3) has relative std
    # about sqrt((kappa - 1) / R) / 2 = 6 %; tolerance 4 of those
    assert std == pytest.approx((2 / n) * math.sqrt(2 * d), rel=0.25)
    assert noise_floor(metric, sample_fn, n, generator=gen(5)) == noise_floor(metric, sample_fn, n, generator=gen(5))


def test_noise_floor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="repeats"):
        noise_floor(mmd_rbf, lambda k, generator=None: torch.zeros(k, 2), 10, repeats=1)
    with pytest.raises(ValueError, match="n must be"):
        noise_floor(mmd_rbf, lambda k, generator=None: torch.zeros(k, 2), 1)


# -- mode coverage -------------------------------------------------------------------------------
WEIGHTS = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)


def four_modes():
    angles = torch.arange(4, dtype=torch.float64) * math.pi / 2
    means = 5.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    covs = torch.stack([torch.diag(torch.tensor(v, dtype=torch.float64))
                        for v in ([0.09, 0.09], [0.25, 0.04], [0.09, 0.16], [0.04, 0.04])])
    return GaussianMixture(WEIGHTS, means, covs)


def test_mode_coverage_of_exact_samples():
    mix, n = four_modes(), 4000
    result = mode_coverage(mix.sample(n, generator=gen(0)), mix)
    # A share P(chi^2_2 > 9) = exp(-4.5) = 1.11 % of exact samples lies beyond 3 Mahalanobis units
    # (the modes are > 10 std apart, so the assignment is right); binomial std 0.17 %, tolerance 4 std.
    p_out = math.exp(-4.5)
    assert result["fraction_covered"] == 1.0
    assert result["off_mode"] == pytest.approx(p_out, abs=4 * math.sqrt(p_out * (1 - p_out) / n))
    assert int(result["counts"].sum()) == round(n * (1 - result["off_mode"]))
    # each frequency has std sqrt(w (1 - w) / n); with all four within 4 std the total variation
    # is at most 2 sum_k sqrt(w_k (1 - w_k) / n) = 0.052
    bound = 2 * float((WEIGHTS * (1 - WEIGHTS)).sqrt().sum()) / math.sqrt(n)
    assert result["weight_error"] < bound


def test_mode_coverage_of_a_collapsed_sampler():
    mix = four_modes()
    one = GaussianMixture(torch.ones(1, dtype=torch.float64), mix.means[2:3], mix.covs[2:3])
    result = mode_coverage(one.sample(1000, generator=gen(1)), mix)
    assert result["fraction_covered"] == 1 / 4
    assert result["counts"].tolist()[:2] + result["counts"].tolist()[3:] == [0, 0, 0]
    # all near samples belong to component 2: total variation to the weights is 1 - w_2 exactly
    assert result["weight_error"] == pytest.approx(1 - 0.3, abs=1e-12)


def test_mode_coverage_uses_mahalanobis_distance():
    mix = GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.diag(torch.tensor([4.0, 0.01])).unsqueeze(0))
    # (5.8, 0) is 2.9 std away along the wide axis, (0, 0.31) is 3.1 std away along the narrow one
    result = mode_coverage(torch.tensor([[5.8, 0.0], [0.0, 0.31]]), mix)
    assert result["counts"].tolist() == [1] and result["off_mode"] == 0.5


def test_mode_coverage_far_from_every_mode():
    result = mode_coverage(torch.full((10, 2), 100.0, dtype=torch.float64), four_modes())
    assert result["fraction_covered"] == 0.0 and result["off_mode"] == 1.0 and result["weight_error"] == 1.0


def test_mode_coverage_rejects_bad_input():
    with pytest.raises(ValueError, match="samples must have D"):
        mode_coverage(torch.zeros(5, 3), four_modes())
    with pytest.raises(ValueError, match="radius_in_std"):
        mode_coverage(torch.zeros(5, 2), four_modes(), radius_in_std=0.0)


# -- Frechet distance ----------------------------------------------------------------------------
def test_frechet_distance_of_diagonal_gaussians():
    # commuting covariances: d^2 = |m1 - m2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 = 1 + 1 + (sqrt 2 - 1)^2.
    # Delta method at n samples each: the mean term has variance 4 |delta|^2 (a_1 + b_1) / n = 20 / n,
    # the covariance term sum_i 2 (sqrt a_i - sqrt b_i)^2 (a_i + b_i) / n = 11.03 / n, so std
    # sqrt(31 / n) = 0.018 at n = 1e5; the upward bias (tr S1 + tr S2) / n ~ 1e-4. Tolerance 5 std.
    n = 100_000
    a, b = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), torch.tensor([4.0, 1.0, 0.5], dtype=torch.float64)
    delta = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    x = normal((n, 3), 0) * a.sqrt()
    y = normal((n, 3), 1) * b.sqrt() + delta
    expected = float(delta.pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert float(frechet_distance(x, y)) == pytest.approx(expected, abs=5 * math.sqrt(31 / n))


def test_frechet_distance_matches_scipy_for_non_commuting_covariances():
    x, y = normal((400, 4), 0) @ normal((4, 4), 1), normal((400, 4), 2) @ normal((4, 4), 3) + 0.5
    m1, m2, s1, s2 = x.mean(0), y.mean(0), torch.cov(x.T), torch.cov(y.T)
    cross = scipy.linalg.sqrtm((s1 @ s2).numpy())
    expected = float((m1 - m2).pow(2).sum() + s1.trace() + s2.trace()) - 2 * float(cross.trace().real)
    assert float(frechet_distance(x, y)) == pytest.approx(expected, rel=1e-9)  # float64 round-off


def test_frechet_distance_of_a_set_with_itself_and_scaling():
    x, y = normal((300, 5), 0), normal((300, 5), 1) * 2
    assert abs(float(frechet_distance(x, x))) < 1e-10  # float64 round-off of traces of size ~5
    # features f -> 2 f scale means by 2 and covariances by 4, hence d^2 by 4
    assert float(frechet_distance(x, y, lambda s: 2 * s)) == pytest.approx(4 * float(frechet_distance(x, y)), rel=1e-10)


def test_sqrtm_psd_is_real_and_symmetric_for_nearly_singular_matrices():
    q, _ = torch.linalg.qr(normal((6, 6), 0))
    a = q @ torch.diag(torch.tensor([1.0, 1e-3, 1e-14, 0.0, 0.0, 0.0], dtype=torch.float64)) @ q.T
    root = sqrtm_psd(a)
    assert root.dtype == torch.float64 and bool(torch.isfinite(root).all())
    assert torch.equal(root, root.T)
    torch.testing.assert_close(root @ root, a, rtol=0, atol=1e-12)  # round-off of eigh on a unit-norm matrix
    # rank-deficient sample covariances (5 points in 20 dimensions) give a finite, non-negative d^2
    fd = frechet_distance(normal((5, 20), 1), normal((5, 20), 2))
    assert bool(torch.isfinite(fd)) and float(fd) > 0


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="x and y must have the same sample shape"):
        frechet_distance(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="x must be"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="samples must have shape"):
        digits_fd(torch.zeros(10, 64), torch.zeros(10, 1, 8, 8))


# -- digits classifier ---------------------------------------------------------------------------
def test_digits_classifier_accuracy_and_fd():
    model = default_digits_classifier()  # trained once per process (about 2 s on one core)
    train, test = digits_split()
    assert accuracy(model, test) >= 0.95
    assert model.features(test.images[:3]).shape == (3, 64)
    floor = float(digits_fd(test.images, train.images))  # real vs real: the finite-sample floor
    noise = float(digits_fd(torch.rand(len(test), 1, 8, 8, generator=gen(0)) * 2 - 1, train.images))
    ones = train.images[train.labels == 1][: len(test)]  # a sampler that only draws ones
    collapsed = float(digits_fd(ones, train.images))
    assert 0 < floor and 10 * floor < collapsed and 10 * floor < noise


def test_digits_classifier_trains_inside_no_grad():
    # digits_fd trains the default classifier on first use, possibly inside torch.no_grad()
    with torch.no_grad():
        model = train_digits_classifier(steps=2)
    assert not model.training  # before the fix, backward() raised: no grad inside no_grad()


def test_as_digits_passes_digits_and_pools_mnist_to_8x8():
    from course_lib.digits_classifier import as_digits

    digits = torch.linspace(-2, 2, 64).reshape(1, 1, 8, 8)
    assert torch.equal(as_digits(digits), digits.clamp(-1, 1))
    mnist = torch.full((2, 1, 28, 28), -1.0)
    mnist[..., 4:24, 4:24] = 0.5  # the central 20x20 box alone carries ink
    out = as_digits(mnist)
    assert out.shape == (2, 1, 8, 8) and torch.allclose(out, torch.full_like(out, 0.5))
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 8, 8\) or \(N, 1, 28, 28\)"):
        as_digits(torch.zeros(2, 3, 32, 32))
