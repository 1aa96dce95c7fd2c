"""MPSR (issue 16): multi-scale object crops (CropInstance) from (seed, step), the auxiliary RPN and RoI losses by
hand, the test path identical to Faster R-CNN's, and the config errors. Real BCCD images, tiny sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fewray.core.errors import ConfigError

torch.set_num_threads(1)

LITE = {"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]}


def _mpsr(**kw):
    from fewray.algorithms import build_classifier

    return build_classifier({"type": "MPSR", "backbone": LITE, "class_names": ["a", "b"], "min_size": 64,
                             "max_size": 96, "neck": {"out_channels": 8}, **kw})


def test_crops_are_seeded_and_hold_an_object_of_the_query():
    from fewray.data.detection.mpsr import MPSRBatchBuilder
    from fewray.data.detection.training import example_catalog, training_records

    records = training_records(example_catalog(), "train", "ALL_CLASSES")
    b = MPSRBatchBuilder(records, 3, 5, 64, 96, True, [16, 48])
    row, again = b(7), MPSRBatchBuilder(records, 3, 5, 64, 96, True, [16, 48])(7)
    assert all(np.array_equal(row[k], again[k]) for k in row)
    assert row["aux_img_0"].shape == (3, 3, 16, 16) and row["aux_img_1"].shape == (3, 3, 48, 48)
    for i, r in enumerate(b.queries.indices(7).tolist()):
        assert row["aux_labels"][i] in records[r]["labels"].tolist()
    with pytest.raises(ConfigError, match="data.mpsr.scales must be sides of at least 8 pixels"):
        MPSRBatchBuilder(records, 3, 5, 64, 96, True, [4])


def test_auxiliary_losses_by_hand_and_the_test_path_is_faster_rcnn():
    from fewray.algorithms import build_classifier

    det = _mpsr(rpn_select_levels=[0, 1], roi_select_levels=[0, 0]).eval()
    aux = [torch.rand(2, 3, 64, 64), torch.rand(2, 3, 128, 128)]
    labels = torch.tensor([1, 0])
    got = det.auxiliary_losses(aux, labels, num_images=2)
    objectness, logits = [], []
    for images, r in zip(aux, (0, 1)):
        feats = list(det.backbone(images).values())
        f = det.rpn.head.conv(feats[r])[:, :, 3:-3, 3:-3]  # 8 x 8 maps: their 2 x 2 centre
        objectness.append(det.rpn.head.cls_logits(f).flatten())
        logits.append(det.roi_heads.box_predictor.classify(det.roi_heads.box_head(F.adaptive_avg_pool2d(feats[0], 7))))
    obj = torch.cat(objectness)
    assert obj.numel() == 2 * 3 * 2 * 2 * 2  # images x anchors x centre cells x scales
    # mmfewshot's normalisation: summed over the crops' anchors, divided by them plus the main RPN's 2 x 256 samples
    assert torch.allclose(got["loss_rpn_cls_auxiliary"], F.softplus(-obj).sum() / (2 * 256 + 48), atol=1e-6)
    assert torch.allclose(got["loss_cls_auxiliary"],
                          0.1 * F.cross_entropy(torch.cat(logits), torch.tensor([2, 1, 2, 1])))
    frcn = build_classifier({"type": "FasterRCNN", "backbone": LITE, "class_names": ["a", "b"], "min_size": 64,
                             "max_size": 96, "neck": {"out_channels": 8}})
    frcn.load_state_dict(det.state_dict())
    image = [torch.rand(3, 64, 80)]
    a, b = det(mode="predict", images=image)[0], frcn(mode="predict", images=image)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_select_level_errors():
    with pytest.raises(ConfigError, match="need one level per auxiliary scale"):
        _mpsr(rpn_select_levels=[0, 1], roi_select_levels=[0])
    with pytest.raises(ConfigError, match="MPSR select level 7 is not a pyramid level"):
        _mpsr(rpn_select_levels=[7], roi_select_levels=[0])
    from fewray.data.detection.training import example_catalog
    from fewray.platform.config import load_config
    from fewray.tasks.mpsr import MPSRDetectionTask

    cfg = load_config("configs/detection/mpsr/lite0_fpn_coco_base_training.yaml",
                      [f"data.root={example_catalog()}", "data.classes=ALL_CLASSES", "model.init_from=null",
                       "model.surgery=null", "data.mpsr.scales=[32, 64]"])
    with pytest.raises(ConfigError, match="data.mpsr.scales has 2 scales but model.rpn_select_levels 3 levels"):
        MPSRDetectionTask().check_data(cfg)
