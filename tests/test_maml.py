"""MAML: inner loop, first vs second order, meta-test protocol, and learning a tiny separable problem."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms import build_classifier
from fewray.algorithms.utils import adapt, batch_norm_batch_stats, functional_forward, trainable_params

torch.set_num_threads(1)

SMALL = {"type": "ConvNet", "in_channels": 1, "channels": [8, 8, 8]}


def _maml(**kw):
    return build_classifier({"type": "MAML", "backbone": SMALL,
                             "head": {"type": "LinearHead", "num_classes": 3, "in_channels": 8 * 3 * 3},
                             **kw})


def _episode(g, ways=3, shots=2, queries=2, pool=None):
    """A task of ``ways`` classes: noisy copies of class templates (24x24, 1 channel).

    Without ``pool`` each class gets a new random template; with ``pool`` ``(P, 1, 24, 24)`` the task draws
    ``ways`` of its templates in a random order, so the label of a template changes from task to task.
    """
    if pool is None:
        templates = torch.rand(ways, 1, 24, 24, generator=g)
    else:
        templates = pool[torch.randperm(len(pool), generator=g)[:ways]]
    s_lab, q_lab = torch.arange(ways).repeat(shots), torch.arange(ways).repeat(queries)
    noise = lambda n: 0.3 * torch.randn(n, 1, 24, 24, generator=g)
    return templates[s_lab] + noise(len(s_lab)), s_lab, templates[q_lab] + noise(len(q_lab)), q_lab


def test_fast_weight_helpers_work_for_any_module_and_leave_it_unchanged():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    params = trainable_params(net)
    loss_fn = lambda p: F.cross_entropy(functional_forward(net, p, x), y)
    fast = adapt(loss_fn, params, steps=5, lr=0.5, first_order=True)
    assert loss_fn(fast) < loss_fn(params)
    for k, v in net.state_dict().items():  # parameters and running statistics untouched
        assert torch.equal(v, before[k])
    net.eval()
    with batch_norm_batch_stats(net):
        assert net[1].training and not net.training
    assert not net[1].training
    with pytest.raises(ValueError):
        adapt(loss_fn, params, steps=-1, lr=0.1)


def test_inner_loop_reduces_support_loss():
    torch.manual_seed(0)
    model = _maml()
    s, sl, _, _ = _episode(torch.Generator().manual_seed(0))
    before = F.cross_entropy(model.logits(s), sl)
    fast = model.adapt(s, sl, steps=5, lr=0.5)
    assert F.cross_entropy(model.logits(s, fast), sl) < before


def test_second_order_differentiates_through_the_inner_loop():
    s, sl, q, ql = _episode(torch.Generator().manual_seed(1))
    grads = {}
    for first_order in (True, False):
        torch.manual_seed(0)
        model = _maml(num_inner_steps=2, inner_lr=0.5, first_order=first_order)
        out = model(mode="train", support_img=s, support_label=sl, query_img=q, query_label=ql)
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        grads[first_order] = model.backbone.layers[0][0].weight.grad.clone()
        assert all(p.grad is not None for p in model.parameters())
    assert not torch.allclose(grads[True], grads[False], rtol=1e-3, atol=1e-6)


def test_meta_test_protocol_adapts_without_touching_the_model():
    torch.manual_seed(0)
    model = _maml(test_num_inner_steps=3, test_inner_lr=0.5)
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    s, sl, q, _ = _episode(torch.Generator().manual_seed(2))
    model.before_meta_test()
    with torch.no_grad():  # the caller's no_grad must not stop adaptation
        model.before_forward_support()
        model(mode="support", img=s, label=sl)
        model.before_forward_query()
        scores = model(mode="query", img=q)
        assert scores.shape == (6, 3)
        assert not torch.allclose(scores, model.logits(q))  # adapted weights differ from the initial ones
        batched = model.forward_tasks(s[None], sl[None], q[None], 3)
    torch.testing.assert_close(batched[0], scores)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(ValueError, match="needs img"):
        model(mode="support", feats=torch.randn(6, 72), label=sl)
    with pytest.raises(ValueError, match="beyond"):
        model(mode="support", img=s, label=sl + 3)
    assert model.frozen_backbone_at_test is False


def test_maml_learns_a_tiny_separable_problem():
    """60 meta-training episodes over 6 template classes whose labels are shuffled per task: beats chance."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    pool = torch.rand(6, 1, 24, 24, generator=g)
    model = _maml(num_inner_steps=1, inner_lr=0.1, first_order=False, test_num_inner_steps=3)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(60):
        s, sl, q, ql = _episode(g, pool=pool)
        out = model(mode="train", support_img=s, support_label=sl, query_img=q, query_label=ql)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    model.before_meta_test()
    eval_g = torch.Generator().manual_seed(123)
    tasks = [_episode(eval_g, queries=5, pool=pool) for _ in range(10)]
    with torch.no_grad():
        scores = model.forward_tasks(torch.stack([t[0] for t in tasks]), torch.stack([t[1] for t in tasks]),
                                     torch.stack([t[2] for t in tasks]), 3)
    acc = (scores.argmax(-1) == torch.stack([t[3] for t in tasks])).float().mean()
    assert acc > 0.55, acc  # chance is 1/3; measured 0.71


def test_maml_meta_validation_runs_on_images(omniglot_catalog):
    # MAML adapts its backbone per task: the training loop's meta-validation must hand it images, not features
    from conftest import tiny_config
    from fewray.platform.train import MetaValidator

    cfg = tiny_config(omniglot_catalog, "model.type=MAML", "model.head={type: LinearHead, num_classes: 5}",
                      "model.num_inner_steps=1", "model.inner_lr=0.4", "val.ways=5", "val.num_tasks=6")
    model = build_classifier(cfg.model).train()
    out = MetaValidator(cfg)(model)
    assert set(out) == {"accuracy_mean", "accuracy_std", "ci95"}
    assert 0.0 <= out["accuracy_mean"] <= 100.0 and out["ci95"] >= 0.0
    assert model.training  # handed back in train mode
