"""The cost of a score-matching step: deterministic counts of vector-Jacobian products in x, and
a timer that runs the steps it says it runs (its values are never asserted: they depend on load)."""

import pytest
import torch

from course_lib.cost import count_input_vjps, seconds_per_step
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
