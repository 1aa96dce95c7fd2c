"""Metric and fine-tune heads against hand computations; classifiers' training and meta-test protocols."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from fewray.algorithms import build_classifier
from fewray.platform.errors import CheckpointError
from fewray.algorithms.heads import (
    CosineDistanceHead,
    LinearHead,
    MatchingHead,
    MetaBaselineHead,
    NegMarginHead,
    RelationHead,
)
from fewray.platform.errors import ConfigError

torch.set_num_threads(1)


def _task(ways=3, shots=2, queries=4, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(ways * shots, dim, generator=g), torch.arange(ways).repeat(shots),
            torch.randn(queries, dim, generator=g), torch.randint(0, ways, (queries,), generator=g))


def _protocol(head_or_model, support, labels, query, **kw):
    head_or_model.before_forward_support()
    if hasattr(head_or_model, "backbone"):
        head_or_model(mode="support", feats=support, label=labels)
        head_or_model.before_forward_query()
        return head_or_model(mode="query", feats=query)
    head_or_model.forward_support(support, labels)
    head_or_model.before_forward_query()
    return head_or_model.forward_query(query)


def test_matching_head_matches_hand_computation():
    s, sl, q, ql = _task()
    head = MatchingHead(temperature=5.0)
    cos = torch.tensor([[float(F.cosine_similarity(qi, si, dim=0)) for si in s] for qi in q])
    attn = torch.softmax(5.0 * cos, dim=1)
    probs = torch.stack([attn[:, sl == c].sum(1) for c in range(3)], 1)
    torch.testing.assert_close(_protocol(head, s, sl, q), probs.log(), rtol=1e-4, atol=1e-5)
    out = head.forward_train(s, sl, q, ql)
    torch.testing.assert_close(out["loss"], F.nll_loss(probs.log(), ql), rtol=1e-4, atol=1e-5)
    assert out["accuracy"] == (probs.argmax(1) == ql).float().mean()


def test_meta_baseline_head_matches_hand_computation():
    s, sl, q, ql = _task()
    head = MetaBaselineHead(temperature=10.0)
    protos = torch.stack([s[sl == c].mean(0) for c in range(3)])
    expected = 10.0 * F.cosine_similarity(q[:, None], protos[None], dim=-1)
    torch.testing.assert_close(_protocol(head, s, sl, q), expected.detach(), rtol=1e-4, atol=1e-5)
    out = head.forward_train(s, sl, q, ql)
    out["loss"].backward()
    assert head.temperature.grad is not None  # learnable temperature
    assert "temperature" in dict(MetaBaselineHead(learnable_temperature=False).named_buffers())


def test_relation_head_matches_hand_computation_and_losses():
    torch.manual_seed(0)
    head = RelationHead(in_channels=4, feature_size=[5, 5], hidden_channels=3).eval()
    s, sl, q = torch.randn(6, 4, 5, 5), torch.arange(3).repeat(2), torch.randn(2, 4, 5, 5)
    protos = torch.stack([s[sl == c].mean(0) for c in range(3)])
    with torch.no_grad():
        expected = torch.tensor([[float(head.relation(torch.cat([qi, p])[None])) for p in protos] for qi in q])
        torch.testing.assert_close(_protocol(head, s, sl, q), expected, rtol=1e-4, atol=1e-5)
    ql = torch.tensor([0, 2])
    head.train()
    ce = head.forward_train(s, sl, q, ql)
    mse_head = RelationHead(in_channels=4, feature_size=[5, 5], loss={"type": "MSELoss"})
    mse = mse_head.forward_train(s, sl, q, ql)
    assert torch.isfinite(ce["loss"]) and torch.isfinite(mse["loss"]) and 0 <= float(mse["loss"].detach()) <= 1
    with pytest.raises(ValueError, match="too small"):
        RelationHead(in_channels=4, feature_size=[2, 2], padding=0)
    with pytest.raises(ValueError, match="MSELoss"):
        RelationHead(in_channels=4, feature_size=[5, 5], loss={"type": "NLLLoss"})


def test_finetune_heads_match_hand_computation():
    torch.manual_seed(0)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    lin = LinearHead(num_classes=3, in_channels=6)
    torch.testing.assert_close(lin(x), x @ lin.fc.weight.T + lin.fc.bias)
    cos = CosineDistanceHead(num_classes=3, in_channels=6)
    w = cos.fc.weight
    expected = 2.0 * (x / (x.norm(dim=1, keepdim=True) + 1e-5)) @ (w / (w.norm(dim=1, keepdim=True) + 1e-5)).T
    torch.testing.assert_close(cos(x), expected)
    assert float(CosineDistanceHead(num_classes=300, in_channels=6).scale) == 10.0
    neg = NegMarginHead(num_classes=3, in_channels=6, margin=-0.1, temperature=5.0)
    c = F.cosine_similarity(x[:, None], neg.fc.weight[None], dim=-1)
    torch.testing.assert_close(neg(x), 5.0 * c, rtol=1e-4, atol=1e-5)
    with_margin = 5.0 * (c + 0.1 * F.one_hot(y, 3))
    torch.testing.assert_close(neg.forward_train(x, y)["loss"], F.cross_entropy(with_margin, y), rtol=1e-4, atol=1e-5)
    soft = NegMarginHead(num_classes=3, in_channels=6, metric_type="softmax", margin=0.2)
    logits = soft.fc(x) - 0.2 * F.one_hot(y, 3)
    torch.testing.assert_close(soft.forward_train(x, y)["loss"], F.cross_entropy(logits, y))
    with pytest.raises(ValueError, match="metric_type"):
        NegMarginHead(metric_type="arc")
    clone = neg.clone(5)
    assert clone.fc.weight.shape == (5, 6) and clone.margin == -0.1


METRIC = {
    "MatchingNet": ({"type": "Conv4", "in_channels": 1}, {"type": "MatchingHead"}),
    "MetaBaseline": ({"type": "Conv4", "in_channels": 1}, {"type": "MetaBaselineHead"}),
    "RelationNet": ({"type": "Conv4NoPool", "in_channels": 1, "channels": [16, 16, 16, 16]},
                    {"type": "RelationHead", "in_channels": 16, "feature_size": [5, 5]}),
}


@pytest.mark.parametrize("name", sorted(METRIC))
def test_metric_classifier_trains_and_batched_tasks_equal_protocol(name):
    torch.manual_seed(0)
    backbone, head = METRIC[name]
    model = build_classifier({"type": name, "backbone": backbone, "head": head})
    s_img, s_lab = torch.rand(6, 1, 28, 28), torch.arange(3).repeat(2)
    q_img, q_lab = torch.rand(6, 1, 28, 28), torch.arange(3).repeat(2)
    out = model(mode="train", support_img=s_img, support_label=s_lab, query_img=q_img, query_label=q_lab)
    assert torch.isfinite(out["loss"]) and 0 <= float(out["accuracy"]) <= 1
    out["loss"].backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.before_meta_test()
    with torch.no_grad():
        feats = model(mode="extract", img=torch.rand(3 * 10, 1, 28, 28)).view(3, 10, *model.backbone(
            torch.rand(1, 1, 28, 28)).shape[1:])
        labels = torch.stack([torch.randperm(6) % 3 for _ in range(3)])
        batched = model.forward_tasks(feats[:, :6], labels, feats[:, 6:], 3)
        assert batched.shape == (3, 4, 3)
        for t in range(3):
            torch.testing.assert_close(batched[t], _protocol(model, feats[t, :6], labels[t], feats[t, 6:]),
                                       rtol=1e-4, atol=1e-4)


def _blobs(ways, per_class, dim=8, seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(ways, dim, generator=g) * 3
    labels = torch.arange(ways).repeat(per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


@pytest.mark.parametrize("head", [
    {"type": "LinearHead"}, {"type": "CosineDistanceHead"}, {"type": "NegMarginHead", "temperature": 5.0}])
def test_finetune_classifier_reaches_100_percent_on_separable_support(head):
    model = build_classifier({"type": "Baseline", "backbone": {"type": "Conv4", "in_channels": 1},
                              "head": {**head, "num_classes": 10, "in_channels": 8},
                              "finetune_steps": 100, "finetune_lr": 0.1})
    model.before_meta_test()
    s, sl = _blobs(5, 2)
    q, ql = _blobs(5, 3, seed=0)
    with torch.no_grad():  # the caller's no_grad must not stop fine-tuning
        scores = _protocol(model, s, sl, q)
    assert model.task_head.fc.weight.shape[0] == 5
    assert (scores.argmax(1) == ql).float().mean() == 1.0
    assert (model.task_head(s).argmax(1) == sl).all()


@pytest.mark.parametrize("head", [
    {"type": "LinearHead"}, {"type": "CosineDistanceHead", "learnable_scale": True},
    {"type": "NegMarginHead", "margin": -0.1, "metric_type": "softmax"}])
def test_finetune_batched_tasks_equal_protocol_and_are_chunk_invariant(head):
    model = build_classifier({"type": "BaselinePP", "backbone": {"type": "Conv4", "in_channels": 1},
                              "head": {**head, "num_classes": 10, "in_channels": 8}, "finetune_steps": 20})
    model.before_meta_test({"finetune_batch_size": 3, "finetune_lr": 0.1})
    support = torch.stack([_blobs(4, 2, seed=t, spread=3.0)[0] for t in range(4)])
    labels = torch.stack([torch.randperm(8) % 4 for _ in range(4)])
    query = torch.randn(4, 5, 8)
    torch.manual_seed(1)
    with torch.no_grad():
        all_at_once = model.forward_tasks(support, labels, query, 4)
        torch.manual_seed(2)  # the global RNG does not matter
        split = torch.cat([model.forward_tasks(support[2:], labels[2:], query[2:], 4),
                           model.forward_tasks(support[:2], labels[:2], query[:2], 4)])
        torch.testing.assert_close(all_at_once, torch.cat([split[2:], split[:2]]), rtol=1e-5, atol=1e-5)
        for t in range(4):
            torch.testing.assert_close(all_at_once[t], _protocol(model, support[t], labels[t], query[t]),
                                       rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown meta_test_cfg"):
        model.before_meta_test({"steps": 3})


def test_finetune_classifier_trains_on_plain_batches_and_meta_test_head_config():
    torch.manual_seed(0)
    model = build_classifier({"type": "NegMargin", "backbone": {"type": "Conv4", "in_channels": 1},
                              "head": {"type": "NegMarginHead", "num_classes": 7, "in_channels": 64,
                                       "margin": -0.02},
                              "meta_test_head": {"type": "NegMarginHead", "temperature": 5.0},
                              "finetune_steps": 2})
    out = model(mode="train", img=torch.rand(4, 1, 28, 28), gt_label=torch.tensor([0, 6, 3, 3]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.backbone.layers[0][0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="labelled batches"):
        model(mode="train", support_img=torch.rand(2, 1, 28, 28), support_label=torch.arange(2),
              query_img=torch.rand(2, 1, 28, 28), query_label=torch.arange(2))
    model.before_meta_test()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    with torch.no_grad():
        scores = _protocol(model, torch.randn(6, 64), torch.arange(3).repeat(2), torch.randn(4, 64))
    assert scores.shape == (4, 3)
    assert model.task_head.temperature == 5.0 and model.task_head.margin == 0.0
    with pytest.raises(ConfigError, match="model.meta_test_head.temprature"):
        build_classifier({"type": "NegMargin", "backbone": {"type": "Conv4", "in_channels": 1},
                          "head": {"type": "NegMarginHead", "num_classes": 7, "in_channels": 64},
                          "meta_test_head": {"type": "NegMarginHead", "temprature": 5.0}})


def test_meta_baseline_loads_a_baseline_backbone(tmp_path):
    torch.manual_seed(0)
    baseline = build_classifier({"type": "Baseline", "backbone": {"type": "Conv4", "in_channels": 1},
                                 "head": {"type": "LinearHead", "num_classes": 10, "in_channels": 64}})
    torch.save({"model": baseline.state_dict(), "step": 1}, tmp_path / "checkpoint.pt")
    meta = build_classifier({"type": "MetaBaseline", "backbone": {"type": "Conv4", "in_channels": 1},
                             "head": {"type": "MetaBaselineHead"},
                             "pretrained_backbone": str(tmp_path / "checkpoint.pt")})
    for k, v in baseline.backbone.state_dict().items():
        assert torch.equal(meta.backbone.state_dict()[k], v)
    other = build_classifier({"type": "MetaBaseline", "backbone": {"type": "Conv4", "in_channels": 1},
                              "head": {"type": "MetaBaselineHead"}})
    other.load_backbone(baseline.state_dict())
    assert torch.equal(other.backbone.layers[0][0].weight, baseline.backbone.layers[0][0].weight)
    with pytest.raises(CheckpointError, match="missing.pt"):
        other.load_backbone(str(tmp_path / "missing.pt"))
    (tmp_path / "train_result.json").write_text(json.dumps({"best_checkpoint": str(tmp_path / "checkpoint.pt")}))
    from_json = build_classifier({"type": "MetaBaseline", "backbone": {"type": "Conv4", "in_channels": 1},
                                  "head": {"type": "MetaBaselineHead"},
                                  "pretrained_backbone": str(tmp_path / "train_result.json")})
    assert torch.equal(from_json.backbone.layers[0][0].weight, baseline.backbone.layers[0][0].weight)
    assert math.isclose(float(other.head.temperature.detach()), 10.0)
