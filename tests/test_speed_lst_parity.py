"""The one-pass LST engine against the reference code's loop structure (two model evaluations per iteration):
same final images and the same per-iteration accept decisions on a tiny seeded CNN."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder of the repo, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.speed_lst import floor_passes, reference_lst  # noqa: E402
from blindspots import LSTConfig, level_set_traversal  # noqa: E402
from blindspots.models import probing  # noqa: E402


def _engine_decisions(result) -> torch.Tensor:
    """Per-iteration accept decisions (T, N) from the engine's cumulative accept counts logged every iteration."""
    return result.trajectory.accepted.diff(dim=0).bool()


@pytest.fixture
def sharp_cnn(tiny_cnn):
    """The tiny seeded CNN with a 100x head: confident enough that LST steps get rejected."""
    with torch.no_grad():
        tiny_cnn.head.weight.mul_(100)
    return tiny_cnn


@pytest.mark.parametrize("adv_eps", [2e-3, 0.0])
def test_engine_matches_reference_structure(sharp_cnn, adv_eps):
    tiny_cnn = sharp_cnn
    gen = torch.Generator().manual_seed(3)
    xs = torch.rand(6, 3, 16, 16, generator=gen)
    xt = torch.rand(6, 3, 16, 16, generator=gen)
    # big steps and a tight threshold, so that both accepts and rejects occur within a few iterations
    config = LSTConfig.paper(iterations=8, step_size=0.3, threshold=0.05, adv_eps=adv_eps)
    engine = level_set_traversal(tiny_cnn, xs, xt, config=replace(config, log_every=1), seed=11)
    images, decisions = reference_lst(tiny_cnn, xs, xt, config=config, seed=11)

    assert decisions.shape == (8, 6)
    assert bool(decisions.any()) and not bool(decisions.all()), "the setting must exercise both outcomes"
    assert torch.equal(_engine_decisions(engine), decisions)
    assert torch.equal(engine.labels, tiny_cnn.eval()(xs).argmax(1))
    torch.testing.assert_close(engine.images, images, atol=1e-5, rtol=0)
    # the samples did move: the comparison is not between two copies of the start
    assert float((images - xs).abs().amax()) > 0.05
    # acceptance counts agree with the reference's decisions
    torch.testing.assert_close(engine.acceptance_rate, decisions.float().mean(0))


def test_reference_uses_given_labels_and_leaves_model_state(sharp_cnn):
    tiny_cnn = sharp_cnn
    gen = torch.Generator().manual_seed(5)
    xs, xt = torch.rand(4, 3, 16, 16, generator=gen), torch.rand(4, 3, 16, 16, generator=gen)
    labels = torch.tensor([0, 1, 2, 3])
    tiny_cnn.train()
    config = LSTConfig.paper(iterations=4, step_size=0.3, threshold=0.01)
    engine = level_set_traversal(tiny_cnn, xs, xt, labels, config=config, seed=2)
    images, decisions = reference_lst(tiny_cnn, xs, xt, labels, config=config, seed=2)
    torch.testing.assert_close(engine.images, images, atol=1e-5, rtol=0)
    torch.testing.assert_close(engine.acceptance_rate, decisions.float().mean(0))
    # probing restored training mode and parameter gradients, and no parameter gradient was left behind
    assert tiny_cnn.training
    assert all(p.requires_grad and p.grad is None for p in tiny_cnn.parameters())


def test_floor_pass_gradient_is_input_gradient_of_source_log_prob(linear_model):
    # logits (w.x + b, 0): -log p_0 = softplus(-(w.x + b)), gradient -sigmoid(-(w.x + b)) w
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(3, dtype=torch.long)
    g = floor_passes(linear_model, x, y, 2)
    with torch.no_grad(), probing(linear_model):
        z = (x * linear_model.w).flatten(1).sum(1) + linear_model.b
        expected = -torch.sigmoid(-z).view(-1, 1, 1, 1) * linear_model.w
    torch.testing.assert_close(g, expected)
    assert all(p.requires_grad and p.grad is None for p in linear_model.parameters())
