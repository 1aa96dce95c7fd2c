"""Losses: mmfewshot's arguments (reduction, weight, avg_factor, loss_weight) against torch.nn.functional."""

import pytest
import torch
import torch.nn.functional as F

from fewray.algorithms import LOSSES
from fewray.platform.errors import ConfigError

torch.set_num_threads(1)


def _data():
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(6, 4, generator=g), 1)
    target = torch.tensor([0, 1, 2, 3, 1, 0])
    weight = torch.rand(6, generator=g)
    return logp, target, weight


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_nll_loss_reductions_match_functional(reduction):
    logp, target, _ = _data()
    loss = LOSSES.build({"type": "NLLLoss", "reduction": reduction})
    torch.testing.assert_close(loss(logp, target), F.nll_loss(logp, target, reduction=reduction))


def test_nll_loss_weight_avg_factor_and_loss_weight():
    logp, target, w = _data()
    per = F.nll_loss(logp, target, reduction="none")
    loss = LOSSES.build({"type": "NLLLoss", "loss_weight": 2.5})
    torch.testing.assert_close(loss(logp, target, weight=w), 2.5 * (per * w).mean())
    torch.testing.assert_close(loss(logp, target, weight=w, avg_factor=4.0), 2.5 * (per * w).sum() / 4.0)
    torch.testing.assert_close(loss(logp, target, reduction_override="sum"), 2.5 * per.sum())
    torch.testing.assert_close(loss(logp, target, weight=w, reduction_override="none"), 2.5 * per * w)
    with pytest.raises(ValueError, match="avg_factor"):
        loss(logp, target, avg_factor=2.0, reduction_override="sum")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_mse_loss_matches_functional(reduction):
    g = torch.Generator().manual_seed(1)
    pred, target, w = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.rand(5, generator=g)
    loss = LOSSES.build({"type": "MSELoss", "reduction": reduction, "loss_weight": 0.5})
    torch.testing.assert_close(loss(pred, target), 0.5 * F.mse_loss(pred, target, reduction=reduction))
    weighted = (pred - target) ** 2 * w[:, None]  # a (N,) weight is per sample
    expected = {"none": weighted, "mean": weighted.mean(), "sum": weighted.sum()}[reduction]
    torch.testing.assert_close(loss(pred, target, weight=w), 0.5 * expected)
    if reduction == "mean":
        torch.testing.assert_close(loss(pred, target, avg_factor=3), 0.5 * ((pred - target) ** 2).sum() / 3)


def test_cross_entropy_loss_and_bad_arguments():
    logits, target = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(LOSSES.build({"type": "CrossEntropyLoss"})(logits, target),
                               F.cross_entropy(logits, target))
    with pytest.raises(ValueError, match="reduction"):
        LOSSES.build({"type": "MSELoss", "reduction": "avg"})
    with pytest.raises(ConfigError, match="loss_wieght"):
        LOSSES.build({"type": "NLLLoss", "loss_wieght": 1.0})
