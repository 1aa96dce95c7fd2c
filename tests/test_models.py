"""Backbone output shapes and the ProtoNet head against a hand computation."""

import torch

from fewray.algorithms import BACKBONES, build_classifier
from fewray.algorithms.heads import PrototypeHead


def test_conv4_shapes():
    net = BACKBONES.build({"type": "Conv4", "in_channels": 1})
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 64)
    net = BACKBONES.build({"type": "Conv4", "in_channels": 3, "flatten": False})
    assert net(torch.zeros(2, 3, 84, 84)).shape == (2, 64, 5, 5)


def test_prototype_head_matches_hand_computation():
    torch.manual_seed(0)
    support = torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    query = torch.randn(5, 4)
    head = PrototypeHead()
    head.before_forward_support()
    head.forward_support(support, labels)
    head.before_forward_query()
    scores = head.forward_query(query)
    protos = torch.stack([support[labels == c].mean(0) for c in range(3)])
    expected = -((query[:, None, :] - protos[None]) ** 2).sum(-1)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)


def test_protonet_trains_on_a_separable_episode():
    torch.manual_seed(0)
    model = build_classifier({"type": "ProtoNet", "backbone": {"type": "Conv4", "in_channels": 1},
                              "head": {"type": "PrototypeHead"}})
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    # 3 classes: a random template each plus heavy noise, so the untrained net confuses them
    templates = torch.rand(3, 1, 28, 28)
    s_img = templates.repeat(2, 1, 1, 1) + torch.randn(6, 1, 28, 28)
    q_img = templates.repeat(3, 1, 1, 1) + torch.randn(9, 1, 28, 28)
    s_lab, q_lab = torch.arange(3).repeat(2), torch.arange(3).repeat(3)
    first = model(mode="train", support_img=s_img, support_label=s_lab, query_img=q_img, query_label=q_lab)["loss"]
    for _ in range(40):
        out = model(mode="train", support_img=s_img, support_label=s_lab, query_img=q_img, query_label=q_lab)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"] < first
    assert out["accuracy"] == 1.0


def test_batched_forward_tasks_equals_the_per_task_protocol():
    torch.manual_seed(0)
    model = build_classifier({"type": "ProtoNet", "backbone": {"type": "Conv4", "in_channels": 1},
                              "head": {"type": "PrototypeHead"}})
    tasks, ways, shots, queries, dim = 4, 5, 3, 7, 64
    support = torch.randn(tasks, ways * shots, dim)
    labels = torch.stack([torch.randperm(ways * shots) % ways for _ in range(tasks)])  # not class-major
    query = torch.randn(tasks, ways * queries, dim)
    batched = model.forward_tasks(support, labels, query, ways)
    assert batched.shape == (tasks, ways * queries, ways)
    for t in range(tasks):
        model.before_forward_support()
        model(mode="support", feats=support[t], label=labels[t])
        model.before_forward_query()
        torch.testing.assert_close(batched[t], model(mode="query", feats=query[t]), rtol=1e-4, atol=1e-3)
