"""The cost of a score-matching step: deterministic counts of vector-Jacobian products in x and of
floating-point operations, and a timer that runs the steps it says it runs (its values are never
asserted: they depend on load)."""

from fractions import Fraction

import pytest
import torch
from torch import nn

from course_lib.cost import count_input_vjps, flops_per_step, seconds_per_step
from course_lib.losses import (
    denoising_score_matching_loss,
    implicit_score_matching_loss,
    sliced_score_matching_loss,
)
from course_lib.nets import MLPConfig, ScoreMLP


def _net(dim: int) -> ScoreMLP:
    torch.manual_seed(0)
    return ScoreMLP(MLPConfig(dim=dim, width=16, depth=1))


@pytest.mark.parametrize("dim", [1, 3, 7])
def test_implicit_loss_takes_one_vjp_per_dimension_the_others_a_fixed_number(dim):
    net = _net(dim)
    score = lambda y: net(y, 0.0)
    x = torch.randn(5, dim)
    assert count_input_vjps(implicit_score_matching_loss, score, x) == dim
    for m in (1, 4):  # all projections in one product, on a batch repeated m times
        sliced = lambda s, y: sliced_score_matching_loss(s, y, n_projections=m)
        assert count_input_vjps(sliced, score, x) == 1
    assert count_input_vjps(lambda s, y: denoising_score_matching_loss(s, y, 0.1), score, x) == 0


def test_counting_leaves_the_loss_unchanged():
    net = _net(3)
    score = lambda y: net(y, 0.0)
    x = torch.randn(6, 3)
    seen = []
    count_input_vjps(lambda s, y: seen.append(implicit_score_matching_loss(s, y)) or seen[-1], score, x)
    assert torch.equal(seen[0], implicit_score_matching_loss(score, x))


def test_seconds_per_step_runs_warmup_plus_steps_and_trains_the_model():
    net = _net(2)
    before = [p.detach().clone() for p in net.parameters()]
    calls = []

    def loss_fn(model, batch, generator):
        calls.append(generator)
        return denoising_score_matching_loss(lambda y: model(y, 0.0), batch, 0.5, generator=generator)

    seconds = seconds_per_step(net, loss_fn, torch.randn(8, 2), steps=3, warmup=2, lr=1e-2)
    assert isinstance(seconds, float) and seconds > 0
    assert len(calls) == 5 and all(g is calls[0] for g in calls)  # one generator throughout
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))


def test_seconds_per_step_rejects_bad_arguments():
    net = _net(2)
    loss_fn = lambda m, b, g: m(b, 0.0).pow(2).mean()
    with pytest.raises(ValueError, match="steps"):
        seconds_per_step(net, loss_fn, torch.randn(4, 2), steps=0)
    with pytest.raises(ValueError, match="warmup"):
        seconds_per_step(net, loss_fn, torch.randn(4, 2), warmup=-1)
    with pytest.raises(ValueError, match="batch"):
        seconds_per_step(net, loss_fn, [[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"batch .*got \(4,\)"):
        seconds_per_step(net, loss_fn, torch.randn(4))
    with pytest.raises(ValueError, match="model"):
        seconds_per_step(lambda y, c: y, loss_fn, torch.randn(4, 2))
    with pytest.raises(ValueError, match="loss_fn"):  # not a 0-d loss: backward would need grad_outputs
        seconds_per_step(net, lambda m, b, g: m(b, 0.0).pow(2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="loss_fn"):  # no graph to the parameters
        seconds_per_step(net, lambda m, b, g: b.pow(2).sum(), torch.randn(4, 2))


def test_flops_of_a_linear_layer_are_its_two_matrix_products():
    # forward (B, in) @ (in, out) and the weight's gradient (out, B) @ (B, in): 2 B in out each;
    # x needs no gradient, the bias's is a sum (elementwise, not counted)
    torch.manual_seed(0)
    layer = nn.Linear(3, 5)
    flops = flops_per_step(layer, lambda m, b, g: m(b).pow(2).sum(), torch.randn(7, 3))
    assert flops == 2 * (2 * 7 * 3 * 5)
    assert all(p.grad is None for p in layer.parameters())  # no update, gradients cleared


def _exact_fit(ds, ys, degree):
    """Coefficients of the polynomial of `degree` through the first degree + 1 points (Lagrange,
    in exact rational arithmetic), and its values at every d."""
    pts = list(zip(ds, ys))[: degree + 1]

    def value(d):
        total = Fraction(0)
        for j, (dj, yj) in enumerate(pts):
            term = Fraction(yj)
            for k, (dk, _) in enumerate(pts):
                if k != j:
                    term *= Fraction(d - dk, dj - dk)
            total += term
        return total

    return [value(d) for d in ds]


def test_implicit_flops_are_quadratic_in_dimension_sliced_and_denoising_affine():
    # D backward passes, each through input and output layers D wide: a + b D + c D^2 exactly;
    # one pass (sliced) or none (denoising): a + b D. The counts are integers, the fit exact.
    dims = [1, 2, 3, 5, 8]
    losses = {
        "implicit": (lambda m, x, g: implicit_score_matching_loss(lambda y: m(y, 0.0), x), 2),
        "sliced": (lambda m, x, g: sliced_score_matching_loss(lambda y: m(y, 0.0), x, generator=g), 1),
        "denoising": (lambda m, x, g: denoising_score_matching_loss(lambda y: m(y, 0.0), x, 0.1,
                                                                    generator=g), 1),
    }
    counts = {}
    for name, (loss_fn, degree) in losses.items():
        counts[name] = [flops_per_step(_net(d), loss_fn, torch.randn(4, d)) for d in dims]
        assert _exact_fit(dims, counts[name], degree) == counts[name], name
    assert _exact_fit(dims, counts["implicit"], 1) != counts["implicit"]  # the D^2 term is there
    again = flops_per_step(_net(3), losses["implicit"][0], torch.randn(4, 3))
    assert again == counts["implicit"][2]  # deterministic: the same count for the same shapes


def test_flops_per_step_rejects_bad_arguments():
    net = _net(2)
    with pytest.raises(ValueError, match="model"):
        flops_per_step(None, lambda m, b, g: m(b, 0.0).sum(), torch.randn(4, 2))
    with pytest.raises(ValueError, match="loss_fn"):
        flops_per_step(net, lambda m, b, g: 1.0, torch.randn(4, 2))
    with pytest.raises(ValueError, match="batch"):
        flops_per_step(net, lambda m, b, g: m(b, 0.0).sum(), torch.randn(4))
