"""Few-shot detectors on torchvision's parts (issue 15): the detector's contract, TFA's surgery and freezing,
the cosine and contrastive heads, FSCE's loss and its decay hook. Small images, random weights, no Ray."""

from __future__ import annotations

import math

import pytest
import torch

from fewray.algorithms import build_classifier
from fewray.algorithms.fewshot_det import (ContrastiveLossDecayHook, CosineSimBBoxHead, apply_surgery,
                                           surgery_name)
from fewray.algorithms.losses import SupervisedContrastiveLoss
from fewray.core.errors import CheckpointError, ConfigError

BACKBONE = {"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]}


def detector(kind="FasterRCNN", classes=("cat", "dog"), **kw):
    cfg = {"type": kind, "backbone": BACKBONE, "class_names": list(classes), "min_size": 64, "max_size": 96,
           "neck": {"out_channels": 16}, "representation_size": 32, **kw}
    return build_classifier(cfg)


def targets():
    return [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 50.0], [30.0, 10.0, 60.0, 40.0]]), "labels": torch.tensor([1, 2])}]


def test_training_call_is_a_loss_dict_and_prediction_is_in_image_pixels():
    torch.manual_seed(0)
    det = detector()
    losses = det(mode="train", images=[torch.rand(3, 64, 80)], targets=targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    out = det(mode="predict", images=[torch.rand(3, 120, 200)])[0]
    assert out["boxes"].shape[1] == 4 and (out["labels"] >= 1).all() and (out["labels"] <= 2).all()
    if len(out["boxes"]):  # boxes come back in the 120 x 200 image's pixels, not the resized ones
        assert float(out["boxes"][:, 2].max()) <= 200.0 + 1e-3 and float(out["boxes"][:, 3].max()) <= 120.0 + 1e-3
    assert det.training  # predict restores the mode
    with pytest.raises(ValueError, match="needs targets"):
        det(mode="train", images=[torch.rand(3, 64, 64)])


def test_surgery_copies_rows_by_class_name():
    torch.manual_seed(0)
    base = detector(classes=("dog", "cat"))
    new = detector(classes=("cat", "cow", "dog"))
    b = base.state_dict()
    state, copied = apply_surgery(new.state_dict(), ["cat", "cow", "dog"], b, ["dog", "cat"], "randinit")
    w_new, w_base = state["roi_heads.box_predictor.cls_score.weight"], b["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(w_new[0], w_base[0])           # background
    assert torch.equal(w_new[1], w_base[2])           # cat: base row 2
    assert torch.equal(w_new[3], w_base[1])           # dog: base row 1
    assert torch.equal(w_new[2], new.state_dict()["roi_heads.box_predictor.cls_score.weight"][2])  # cow: fresh
    d_new, d_base = state["roi_heads.box_predictor.bbox_pred.weight"], b["roi_heads.box_predictor.bbox_pred.weight"]
    assert torch.equal(d_new[4:8], d_base[8:12])      # cat's 4 box-delta rows
    assert copied == ["cat", "dog"]
    assert torch.equal(state["backbone.fpn.inner_blocks.0.0.weight"], b["backbone.fpn.inner_blocks.0.0.weight"])
    removed, copied = apply_surgery(new.state_dict(), ["cat", "cow", "dog"], b, ["dog", "cat"], "remove")
    assert copied == [] and not torch.equal(removed["roi_heads.box_predictor.cls_score.weight"][1], w_base[2])


def test_combine_takes_novel_rows_from_the_novel_model():
    torch.manual_seed(0)
    base, novel, new = detector(classes=("dog",)), detector(classes=("cow",)), detector(classes=("dog", "cow"))
    state, copied = apply_surgery(new.state_dict(), ["dog", "cow"], base.state_dict(), ["dog"], "combine",
                                  novel.state_dict(), ["cow"])
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(state[key][2], novel.state_dict()[key][1]) and torch.equal(state[key][1], base.state_dict()[key][1])
    assert copied == ["dog", "cow"]
    with pytest.raises(ConfigError, match="combine needs model.init_from_novel"):
        apply_surgery(new.state_dict(), ["dog", "cow"], base.state_dict(), ["dog"], "combine")


def test_surgery_names_and_errors():
    assert surgery_name("randinit") == surgery_name("random_init") == "random_init"
    with pytest.raises(ConfigError, match="'random' .*combine, remove, random_init.*'randinit'"):
        surgery_name("random")
    other = build_classifier({"type": "FasterRCNN", "backbone": BACKBONE, "class_names": ["a"], "min_size": 64,
                              "max_size": 96, "neck": {"out_channels": 8}, "representation_size": 32})
    with pytest.raises(CheckpointError, match="'backbone.fpn.*' has shape"):
        apply_surgery(detector().state_dict(), ["cat", "dog"], other.state_dict(), ["a"], "random_init")


def test_tfa_from_a_base_checkpoint_freezes_all_but_the_predictor(tmp_path):
    torch.manual_seed(0)
    base = detector(classes=("dog",))
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": base.state_dict(), "config": {"model": {"type": "FasterRCNN", "class_names": ["dog"]}}}, ckpt)
    tfa = detector("TFA", classes=("dog", "cow"), init_from=str(ckpt), surgery="randinit",
                   head={"type": "CosineSimBBoxHead", "scale": 20})
    trainable = {n for n, p in tfa.named_parameters() if p.requires_grad}
    assert trainable == {"roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.weight",
                         "roi_heads.box_predictor.bbox_pred.bias"}
    # the cosine head's weight rows of the base class come from the base's linear classifier
    assert torch.equal(tfa.state_dict()["roi_heads.box_predictor.cls_score.weight"][1],
                       base.state_dict()["roi_heads.box_predictor.cls_score.weight"][1])
    assert torch.equal(tfa.state_dict()["roi_heads.box_head.fc6.weight"], base.state_dict()["roi_heads.box_head.fc6.weight"])
    losses = tfa(mode="train", images=[torch.rand(3, 64, 80)], targets=targets())
    sum(losses.values()).backward()
    assert tfa.roi_heads.box_predictor.cls_score.weight.grad is not None
    assert tfa.roi_heads.box_head.fc6.weight.grad is None
    with pytest.raises(CheckpointError, match="not a detector checkpoint"):
        torch.save({"model": {}, "config": {"model": {"type": "ProtoNet"}}}, tmp_path / "cls.pt")
        detector("TFA", init_from=str(tmp_path / "cls.pt"))
    with pytest.raises(ConfigError, match="frozen_parameters: 'bogus' matches no parameter"):
        detector(frozen_parameters=["bogus"])
    with pytest.raises(ConfigError, match="model.surgery needs model.init_from"):
        detector(surgery="combine")
    fsce_like = detector("FasterRCNN", frozen_parameters=["rpn_head", "neck"])  # mmfewshot's names accepted
    assert not any(p.requires_grad for n, p in fsce_like.named_parameters() if n.startswith(("rpn.", "backbone.fpn.")))


def test_cosine_head_scores_are_scaled_cosines():
    head = CosineSimBBoxHead(8, 3, scale=20.0)
    x = torch.randn(5, 8)
    scores, deltas = head(x)
    expected = 20.0 * torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(
        head.cls_score.weight, dim=1).T
    assert torch.allclose(scores, expected, atol=1e-5) and deltas.shape == (5, 16)
    assert torch.allclose(head(3.0 * x)[0], scores, atol=1e-5)  # scale-free in the RoI vector


def test_supervised_contrastive_loss_by_hand():
    loss = SupervisedContrastiveLoss(temperature=1.0, iou_threshold=0.5, loss_weight=1.0)
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels, ious = torch.tensor([0, 0, 1]), torch.tensor([0.9, 0.9, 0.1])
    # anchors 0 and 1 count (IoU >= 0.5); for 0: s01 = 1, s02 = 0 -> -log(e / (e + 1)); the same for 1
    expected = -math.log(math.e / (math.e + 1.0))
    assert float(loss(z, labels, ious)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(z, labels, torch.zeros(3))) == 0.0  # nothing above the IoU threshold
    with pytest.raises(ConfigError, match="reweight_type"):
        SupervisedContrastiveLoss(reweight_type="square")


def test_fsce_adds_a_decayable_contrastive_loss():
    torch.manual_seed(0)
    fsce = detector("FSCE", loss_contrast={"iou_threshold": 0.5})
    assert {n.split(".")[0] for n, p in fsce.named_parameters() if not p.requires_grad} == {"backbone"}
    assert all(p.requires_grad for n, p in fsce.named_parameters() if n.startswith("backbone.fpn."))
    losses = fsce(mode="train", images=[torch.rand(3, 64, 80)], targets=targets())
    assert "loss_contrast" in losses and float(losses["loss_contrast"]) > 0
    hook = ContrastiveLossDecayHook(decay_steps=[2, 4], decay_rate=0.5)
    hook.before_train_iter(fsce, 5)
    torch.manual_seed(1)
    first = fsce(mode="train", images=[torch.rand(3, 64, 80)], targets=targets())["loss_contrast"]
    hook.before_train_iter(fsce, 0)
    torch.manual_seed(1)
    again = fsce(mode="train", images=[torch.rand(3, 64, 80)], targets=targets())["loss_contrast"]
    assert float(first) == pytest.approx(0.25 * float(again), rel=1e-4)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.class_names"):
        build_classifier({"type": "FasterRCNN", "backbone": BACKBONE})
    with pytest.raises(ConfigError, match="a detector's head is a bbox head"):
        detector(head={"type": "PrototypeHead"})
    with pytest.raises(ConfigError, match="model.rpn.post_nms"):
        detector(rpn={"post_nms": 10})
    with pytest.raises(ConfigError, match="anchor_sizes has 2 sizes; the pyramid has 4 levels"):
        detector(anchor_sizes=[32, 64])
    with pytest.raises(ConfigError, match="out_indices"):
        build_classifier({"type": "FasterRCNN", "backbone": {"type": "EfficientNetLite0", "pretrained": False},
                          "class_names": ["a"]})


def test_fsce_starts_from_a_base_checkpoint_by_surgery(tmp_path):
    """FSCE's predictor holds its contrastive branch: surgery maps only the class rows, the branch starts random."""
    torch.manual_seed(0)
    base = detector(classes=("dog",))
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": base.state_dict(), "config": {"model": {"type": "FasterRCNN", "class_names": ["dog"]}}}, ckpt)
    fsce = detector("FSCE", classes=("dog", "cow"), init_from=str(ckpt), surgery="random_init")
    assert torch.equal(fsce.state_dict()["backbone.fpn.inner_blocks.0.0.weight"],
                       base.state_dict()["backbone.fpn.inner_blocks.0.0.weight"])
    assert torch.equal(fsce.state_dict()["roi_heads.box_predictor.cls_score.weight"][1],
                       base.state_dict()["roi_heads.box_predictor.cls_score.weight"][1])
    assert "loss_contrast" in fsce(mode="train", images=[torch.rand(3, 64, 80)], targets=targets())
