"""Multi-label (issue 14, mmpretrain's first part): the heads, the metrics and the COCO/VOC multi-label catalogs.

Metrics are checked against small cases worked out by hand (in the comments); catalogs are built from the real
releases in ``../shared/data`` (coco128, bccd; trimmed copies of coco_mini and aquarium for the official and
Roboflow COCO layouts) at 16x16 pixels to stay fast.
"""

from __future__ import annotations

import doctest
import json
import pickle
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, SHARED_DATA

from fewray.algorithms import HEADS, LOSSES
from fewray.algorithms.cls_heads import MultiLabelClsHead, MultiLabelLinearClsHead
from fewray.evaluation.multi_label import (
    AveragePrecision,
    MultiLabelEvaluator,
    MultiLabelMetric,
    average_precision,
    multi_label_metrics,
    to_target_matrix,
)
from fewray.data.catalog import load_split, read_catalog_info, read_labels
from fewray.data.sources import MULTI_LABEL_SOURCES, prepare_multilabel
from fewray.platform.errors import DataError

torch.set_num_threads(1)

COCO128 = SHARED_DATA / "coco128"
BCCD = SHARED_DATA / "bccd"
COCO_MINI = SHARED_DATA / "coco_mini"
AQUARIUM = SHARED_DATA / "aquarium"
SIZE = 16


# ------------------------------------------------------------------------------------------------- metrics

# Case A: 4 images x 3 classes.
SCORES_A = [[0.9, 0.6, 0.1],
            [0.8, 0.4, 0.7],
            [0.3, 0.7, 0.2],
            [0.2, 0.1, 0.6]]
TARGETS_A = np.array([[1, 1, 0],
                      [1, 0, 0],
                      [0, 0, 0],
                      [0, 0, 1]])
# AP, class 0: ranking img0(+) img1(+) img2 img3 -> (1/1 + 2/2) / 2 = 100
#     class 1: img2(-) img0(+) img1 img3        -> 1/2                = 50
#     class 2: img1(-) img3(+) img2 img0        -> 1/2                = 50     mAP = 200/3 = 66.67
# thr=0.5 predicts img0 {0,1}, img1 {0,2}, img2 {1}, img3 {2}:
#     class 0: TP 2 of 2 predicted, 2 positives -> P 100, R 100, F1 100
#     class 1: TP 1 (img0) of 2 predicted, 1 positive -> P 50, R 100, F1 66.67
#     class 2: TP 1 (img3) of 2 predicted, 1 positive -> P 50, R 100, F1 66.67
#     CP = 66.67, CR = 100, CF1 = (100 + 66.67 + 66.67) / 3 = 77.78
#     overall TP 4, predicted 6, positives 4: OP = 66.67, OR = 100, OF1 = 2 * 2/3 * 1 / (5/3) = 80
THR_A = {"mAP": 200 / 3, "CP": 200 / 3, "CR": 100.0, "CF1": 700 / 9, "OP": 200 / 3, "OR": 100.0, "OF1": 80.0}
# topk=1 predicts the argmax: img0 {0}, img1 {0}, img2 {1}, img3 {2}:
#     class 0: TP 2 of 2, 2 positives -> 100, 100, 100
#     class 1: predicted img2, positive img0 -> TP 0: 0, 0, 0
#     class 2: predicted img3, positive img3 -> 100, 100, 100
#     CP = CR = CF1 = 66.67; overall TP 3, predicted 4, positives 4: OP = OR = OF1 = 75
TOP1_A = {"mAP": 200 / 3, "CP": 200 / 3, "CR": 200 / 3, "CF1": 200 / 3, "OP": 75.0, "OR": 75.0, "OF1": 75.0}


def close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), (k, got[k], want[k])


def test_metrics_by_hand_thr_and_topk():
    close(multi_label_metrics(SCORES_A, TARGETS_A, thr=0.5), THR_A)
    close(multi_label_metrics(SCORES_A, TARGETS_A, topk=1), TOP1_A)
    close(multi_label_metrics(SCORES_A, TARGETS_A), THR_A)  # neither: thr = 0.5
    with pytest.warns(UserWarning, match="thr decides"):
        close(multi_label_metrics(SCORES_A, TARGETS_A, thr=0.5, topk=1), THR_A)  # both: thr decides
    # thr=0.65 predicts img0 {0}, img1 {0, 2}, img2 {1}: class 0 100/100/100, class 1 0/0/0, class 2 0/0/0
    # (img1 is no class-2 positive, img3's 0.6 < 0.65); overall TP 2, predicted 4, positives 4 -> 50/50/50
    got = multi_label_metrics(SCORES_A, TARGETS_A, thr=0.65)
    close({k: v for k, v in got.items() if k != "mAP"},
          {"CP": 100 / 3, "CR": 100 / 3, "CF1": 100 / 3, "OP": 50.0, "OR": 50.0, "OF1": 50.0})
    # topk=2: img0 {0, 1}, img1 {0, 2}, img2 {1, 0}, img3 {2, 0}: class 0 TP 2 of 4 (P 50, R 100, F1 66.67),
    # class 1 TP 1 of 2 (50, 100, 66.67), class 2 TP 1 of 2 (50, 100, 66.67); overall TP 4 of 8, 4 positives
    got = multi_label_metrics(SCORES_A, TARGETS_A, topk=2)
    close({k: v for k, v in got.items() if k != "mAP"},
          {"CP": 50.0, "CR": 100.0, "CF1": 200 / 3, "OP": 50.0, "OR": 100.0, "OF1": 200 / 3})


def test_class_without_positives_and_all_zero_predictions():
    # 3 images, 2 classes; class 1 has no positive; every score is 0 (a model that predicts nothing).
    scores = np.zeros((3, 2))
    targets = np.array([[1, 0], [0, 0], [1, 0]])
    # class 0: one group of tied scores holding 2 positives among 3 -> P 2/3 at R 1 -> AP 66.67;
    # class 1: no positive -> AP undefined, left out of mAP (mmpretrain would count 0 and report 33.33).
    ap = average_precision(scores, targets)
    assert ap[0] == pytest.approx(200 / 3) and np.isnan(ap[1])
    # thr 0.5: nothing predicted -> per class P = 0/max(0,1) = 0, R = 0, F1 = 0; overall 0/0/0.
    close(multi_label_metrics(scores, targets), {"mAP": 200 / 3, "CP": 0.0, "CR": 0.0, "CF1": 0.0,
                                                  "OP": 0.0, "OR": 0.0, "OF1": 0.0})
    # topk=1 on all-equal scores picks the lower class index (0) for every image:
    # class 0: TP 2 of 3 predicted, 2 positives -> P 66.67, R 100, F1 80; class 1: nothing -> 0 (counted in C*)
    close(multi_label_metrics(scores, targets, topk=1),
          {"mAP": 200 / 3, "CP": 100 / 3, "CR": 50.0, "CF1": 40.0, "OP": 200 / 3, "OR": 100.0, "OF1": 80.0})
    # no positive at all: mAP is nan, not 0
    assert np.isnan(multi_label_metrics(scores, np.zeros((3, 2)))["mAP"])


def test_ignored_targets_and_ties():
    # one class, target -1 on img1 (a VOC "difficult" class): img1 counts neither in AP nor in TP/FP/FN.
    scores, targets = [[0.9], [0.8], [0.7]], np.array([[0], [-1], [1]])
    # ranking without img1: img0(-), img2(+) -> AP 1/2 = 50 (as a negative it would be 1/3 = 33.33)
    assert average_precision(scores, targets)[0] == pytest.approx(50.0)
    # targets img0 +, img1 ignored, img2 -; thr 0.75 predicts img0 and img1:
    # TP 1 of 1 predicted (img1 left out), 1 positive -> P 100, R 100 (were img1 a negative: P 50)
    m = multi_label_metrics([[0.9], [0.8], [0.7]], np.array([[1], [-1], [0]]), thr=0.75)
    assert (m["CP"], m["CR"], m["OP"]) == (100.0, 100.0, 100.0)
    # ties: img3 (0.9, +) first, then one group {img0(+), img1, img2} at 0.5 -> P 1 at R 1/2, P 2/4 at R 1:
    # AP = 1/2 * 1 + 1/2 * 1/2 = 75, whatever the order of the images
    scores, targets = np.array([[0.5], [0.5], [0.5], [0.9]]), np.array([[1], [0], [0], [1]])
    for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        assert average_precision(scores[perm], targets[perm])[0] == pytest.approx(75.0)


def test_average_precision_matches_mmpretrain_formula_and_sklearn():
    rng = np.random.default_rng(0)
    scores = rng.random((60, 5))  # no ties
    targets = (rng.random((60, 5)) < 0.3).astype(int)
    targets[:, 4] = 0  # a class without positives
    ap = average_precision(scores, targets)
    for k in range(4):  # mmpretrain: mean over positives of the precision at their rank
        order = np.argsort(-scores[:, k])
        hits = targets[order, k] == 1
        ref = np.mean(np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)) * 100
        assert ap[k] == pytest.approx(ref)
    assert np.isnan(ap[4])
    sk = pytest.importorskip("sklearn.metrics")
    tied = np.round(scores, 1)  # many ties: sklearn also takes a group of equal scores at once
    tied_ap = average_precision(tied, targets)
    for k in range(4):
        assert ap[k] == pytest.approx(100 * sk.average_precision_score(targets[:, k], scores[:, k]))
        assert tied_ap[k] == pytest.approx(100 * sk.average_precision_score(targets[:, k], tied[:, k]))


def test_two_shards_equal_one_pass():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random((40, 6)), 1).astype(np.float32)  # rounded: many ties
    targets = (rng.random((40, 6)) < 0.35).astype(int)
    targets[rng.random((40, 6)) < 0.05] = -1
    targets[:, 5] = 0  # one class without positives
    for ev in (MultiLabelEvaluator(), MultiLabelEvaluator(topk=2), AveragePrecision(), MultiLabelMetric(thr=0.3)):
        one = ev.compute(ev.merge([ev.process(scores, targets)]))
        a, b = ev.process(scores[:17], targets[:17]), ev.process(scores[17:], targets[17:])
        a, b = pickle.loads(pickle.dumps(a)), pickle.loads(pickle.dumps(b))  # as a Ray task returns them
        assert ev.compute(ev.merge([a, b])) == one
        assert ev.compute(ev.merge([b, a])) == one  # any order
        assert set(one) == set(ev.metrics) and all(ev.mode(m) == "max" for m in ev.metrics)
        # and not the average of shard metrics
    ev = MultiLabelEvaluator()
    shard_avg = np.mean([ev.compute(ev.process(scores[s], targets[s]))["mAP"] for s in (slice(0, 17), slice(17, 40))])
    assert ev.compute(ev.merge([ev.process(scores[:17], targets[:17]), ev.process(scores[17:], targets[17:])]))["mAP"] \
        != pytest.approx(shard_avg)
    part = ev.process(torch.tensor(scores), torch.tensor(targets))  # torch in, numpy out
    assert isinstance(part["scores"], np.ndarray) and part["targets"].dtype == np.int8


def test_evaluator_inputs_and_errors():
    ev = MultiLabelEvaluator()
    # head.predict dicts as outputs, class-index lists and catalog rows as targets give the same matrix
    head = MultiLabelClsHead()
    logits = torch.logit(torch.tensor(SCORES_A, dtype=torch.float64))
    preds = head.predict(logits)
    rows = [{"labels": [i for i, t in enumerate(r) if t], "difficult_labels": []} for r in TARGETS_A]
    index_lists = [[i for i, t in enumerate(r) if t] for r in TARGETS_A]
    for targets in (TARGETS_A, index_lists, rows):
        close(ev.compute(ev.process(preds, targets)), THR_A)
    # difficult-only classes: -1 by default, 1 or 0 on request (mmpretrain's difficult_as_positive)
    rows = [{"labels": [0], "difficult_labels": [1, 0]}]
    assert to_target_matrix(rows, 1, 3).tolist() == [[1, -1, 0]]  # a label that is also difficult stays 1
    assert to_target_matrix(rows, 1, 3, difficult_as_positive=True).tolist() == [[1, 1, 0]]
    assert to_target_matrix(rows, 1, 3, difficult_as_positive=False).tolist() == [[1, 0, 0]]
    with pytest.raises(ValueError, match="shape"):
        ev.process(SCORES_A, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="outside 0..2"):
        ev.process(SCORES_A, [[0], [3], [], []])
    with pytest.raises(ValueError, match="repeat a class index"):  # a multi-hot row given as a list
        ev.process(SCORES_A, TARGETS_A.tolist())
    with pytest.raises(ValueError, match="1 .positive., 0 .negative. or -1"):
        ev.process(SCORES_A, np.full((4, 3), 0.5))
    with pytest.raises(ValueError, match="needs the targets"):
        ev.process(SCORES_A)
    with pytest.raises(ValueError, match="topk=4 is more than the 3 classes"):
        MultiLabelMetric(topk=4).compute(ev.process(SCORES_A, TARGETS_A))
    with pytest.raises(ValueError, match="no images"):
        ev.compute(ev.merge([]))
    with pytest.raises(ValueError, match="disagree on the number of classes"):
        ev.merge([ev.process([[0.1, 0.2]], [[0]]), ev.process([[0.1]], [[0]])])
    with pytest.warns(UserWarning, match="thr decides"):
        both = MultiLabelEvaluator(thr=0.5, topk=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, at construction
        close(both.compute(both.process(SCORES_A, TARGETS_A)), THR_A)
    with pytest.raises(ValueError, match="thr must lie in"):
        MultiLabelEvaluator(thr=1.5)
    with pytest.raises(ValueError, match="topk must be >= 1"):
        MultiLabelEvaluator(topk=0)


# --------------------------------------------------------------------------------------------------- heads

def test_heads_are_registered_and_built_from_config():
    head = HEADS.build({"type": "MultiLabelLinearClsHead", "num_classes": 4, "in_channels": 8, "topk": 2})
    assert isinstance(head, MultiLabelLinearClsHead) and head.topk == 2 and head.thr is None
    assert head.fc.bias.abs().sum() == 0 and head.fc.weight.std() < 0.05  # mmpretrain's Normal(0, 0.01)
    plain = HEADS.build({"type": "MultiLabelClsHead", "loss": {"type": "CrossEntropyLoss", "use_sigmoid": True}})
    assert plain.thr == 0.5 and not list(plain.parameters())
    from fewray.core.errors import ConfigError

    with pytest.raises(ConfigError, match="model.head.in_channels"):
        HEADS.build({"type": "MultiLabelLinearClsHead", "num_classes": 4}, "model.head")
    with pytest.raises(ValueError, match="num_classes and in_channels"):
        MultiLabelLinearClsHead(num_classes=0, in_channels=8)


def test_loss_is_binary_cross_entropy_summed_over_classes_averaged_over_samples():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.5, -2.0]])
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    want = F.binary_cross_entropy_with_logits(logits, multi_hot, reduction="sum") / 2  # mmpretrain: avg_factor=N
    head = MultiLabelClsHead()
    for targets in (multi_hot, multi_hot.numpy(), [[0, 2], []], [torch.tensor([2, 0]), ()], ({0, 2}, set())):
        out = head.loss((torch.randn(2, 7), logits), targets)  # the last stage of a tuple is used
        assert set(out) == {"loss"}
        torch.testing.assert_close(out["loss"], want)
    torch.testing.assert_close(head(logits, [[0, 2], []])["loss"], want)  # torchvision's forward(x, targets)
    assert head(logits) is logits  # no layer: forward without targets returns the logits
    # hand case: zero logits -> every element costs log 2; the -1 entry is ignored: 2 elements / N=1
    out = head.loss(torch.zeros(1, 3), torch.tensor([[1.0, -1.0, 0.0]]))["loss"]
    assert out.item() == pytest.approx(2 * np.log(2))
    # soft targets (mixup-style scores in [0, 1]) are accepted
    head.loss(logits, torch.full((2, 3), 0.3))
    for bad, match in ((torch.zeros(3, 3), "shape .2, 3."), ([[0], [5]], "index 5 outside 0..2"), ([[0]], "1 samples"),
                       (torch.tensor([0, 1]), "multi-hot tensor or a list"), (torch.full((2, 3), 2.0), "-1 .ignored."),
                       ([[0.5], []], "class indices"), ([[1, 0, 1], [0, 0, 0]], "repeat a class index")):
        with pytest.raises(ValueError, match=match):
            head.loss(logits, bad)


def test_predict_thr_topk_rules():
    # sigmoid(logit(p)) = p: scores img0 (0.9, 0.5, 0.2), img1 (0.3, 0.6, 0.8)
    scores = torch.tensor([[0.9, 0.5, 0.2], [0.3, 0.6, 0.8]], dtype=torch.float64)
    logits = torch.logit(scores)
    labels = lambda head: [p["pred_label"].tolist() for p in head.predict((logits,))]  # noqa: E731
    assert labels(MultiLabelClsHead()) == [[0, 1], [1, 2]]  # neither: thr 0.5, ">=" keeps 0.5; ascending
    assert labels(MultiLabelClsHead(thr=0.7)) == [[0], [2]]
    assert labels(MultiLabelClsHead(topk=2)) == [[0, 1], [2, 1]]  # best first
    with pytest.warns(UserWarning, match="thr decides"):
        both = MultiLabelClsHead(thr=0.85, topk=2)
    assert labels(both) == [[0], []]  # thr decides; an image may get no label
    out = MultiLabelClsHead().predict(logits)
    torch.testing.assert_close(out[0]["pred_score"], scores[0])
    samples = [{"id": 1}, {"id": 2}]
    assert MultiLabelClsHead().predict(logits, samples) is samples and samples[1]["pred_label"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="topk=4 is more than the 3 classes"):
        MultiLabelClsHead(topk=4).predict(logits)
    with pytest.raises(ValueError, match="thr must lie in"):
        MultiLabelClsHead(thr=-0.1)
    with pytest.raises(ValueError, match="topk must be >= 1"):
        MultiLabelClsHead(topk=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultiLabelClsHead(topk=1)  # one of them: no warning


def test_linear_head_learns_a_multi_label_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = torch.stack([x[:, 0] > 0, x[:, 1] > 0, x[:, 0] + x[:, 1] > 0.5], 1).float()
    head = MultiLabelLinearClsHead(num_classes=3, in_channels=8)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    first = None
    for _ in range(60):
        loss = head((x,), y)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with torch.no_grad():
        m = multi_label_metrics(torch.sigmoid(head(x)), y.int())
    assert m["mAP"] > 90 and m["OF1"] > 80
    assert head((x[:, :, None, None],)).shape == (64, 3)  # (N, D, 1, 1) pooled features are flattened


def test_cross_entropy_loss_use_sigmoid_and_default_unchanged():
    logits, idx = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(LOSSES.build({"type": "CrossEntropyLoss"})(logits, idx), F.cross_entropy(logits, idx))
    target, w = (torch.rand(4, 3) > 0.5).float(), torch.rand(4)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    loss = LOSSES.build({"type": "CrossEntropyLoss", "use_sigmoid": True, "loss_weight": 2.0})
    torch.testing.assert_close(loss(logits, target), 2.0 * bce.mean())
    torch.testing.assert_close(loss(logits, target, weight=w, avg_factor=4), 2.0 * (bce * w[:, None]).sum() / 4)
    torch.testing.assert_close(loss(logits, target, reduction_override="none"), 2.0 * bce)
    with pytest.raises(ValueError, match="target of the logits' shape"):
        loss(logits, idx)


# ------------------------------------------------------------------------------------------------ catalogs

def coco_label_sets(json_path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Reference, straight from the JSON: class names by id, and ``{image id: sorted class names}``."""
    data = json.loads(json_path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    sets: dict[str, set] = {str(im["id"]): set() for im in data["images"]}
    for a in data["annotations"]:
        sets[str(a["image_id"])].add(a["category_id"])
    return [names[i] for i in sorted(names)], {k: sorted(v) for k, v in sets.items()}


def check_rows(root: Path, split: str, classes: list[str], want: dict[str, list[int]]) -> pq.Table:
    table = pq.read_table(root / f"{split}.parquet")
    assert table.schema.field("labels").type == pa.list_(pa.int32())
    assert table.schema.field("difficult_labels").type == pa.list_(pa.int32())
    assert "label" not in table.column_names  # never confused with the few-shot catalogs' label
    rows = table.drop(["image"]).to_pylist()
    assert {r["image_id"]: r["labels"] for r in rows} == want
    for r in rows:
        assert r["label_names"] == [classes[i] for i in r["labels"]] and r["labels"] == sorted(r["labels"])
    return table


def test_coco128_single_json(tmp_path):
    out = tmp_path / "coco128_ml"
    info = prepare_multilabel(COCO128, out, image_size=SIZE)
    classes, sets = coco_label_sets(COCO128 / "instances_coco128.json")
    ids = json.loads((COCO128 / "instances_coco128.json").read_text())
    ids = sorted(c["id"] for c in ids["categories"])
    assert info["classes"] == classes and len(classes) == 80 and info["category_ids"] == ids
    assert info == read_catalog_info(str(out)) and info["task"] == "multi_label" and info["format"] == "coco"
    want = {k: sorted(ids.index(c) for c in v) for k, v in sets.items()}
    table = check_rows(out, "train", classes, want)
    assert table.num_rows == 128 and list(info["splits"]) == ["train"]  # one unnamed file -> train
    assert info["splits"]["train"]["images_without_objects"] == 2  # kept with empty label sets
    assert sum(1 for v in want.values() if not v) == 2
    assert sum(1 for p in info["splits"]["train"]["positives_per_class"] if p) == 71  # 71 of 80 classes present
    assert read_catalog_info(str(out))["splits"]["train"]["images"] == 128
    from PIL import Image
    import io

    img = Image.open(io.BytesIO(table.column("image")[0].as_py()))
    assert img.size == (SIZE, SIZE) and img.mode == "RGB"
    # the few-shot readers refuse it in one line instead of reading a label per image
    with pytest.raises(DataError, match="has no column 'label'"):
        read_labels(str(out), "train")
    with pytest.raises(DataError, match="has no column 'label'"):
        load_split(str(out), "train", channels=3)
    # drop_empty leaves the 2 images out; a catalog fewray wrote is replaced
    info = prepare_multilabel(COCO128, out, image_size=SIZE, drop_empty=True, image_format="jpeg")
    assert info["splits"]["train"]["images"] == 126 and info["splits"]["train"]["dropped_without_objects"] == 2
    assert MULTI_LABEL_SOURCES["multilabel"] is prepare_multilabel


def bccd_label_sets(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Reference from the XML text: ``{file id: sorted object names}``."""
    sets = {p.stem: sorted(set(re.findall(r"<name>\s*([^<]+?)\s*</name>", p.read_text())))
            for p in sorted((root / "Annotations").glob("*.xml"))}
    return sorted({n for v in sets.values() for n in v}), sets


def test_bccd_voc(tmp_path):
    out = tmp_path / "bccd_ml"
    info = prepare_multilabel(BCCD, out, image_size=SIZE)
    classes, sets = bccd_label_sets(BCCD / "BCCD")
    assert info["classes"] == classes == ["Platelets", "RBC", "WBC"] and info["format"] == "voc"
    assert {s: v["images"] for s, v in info["splits"].items()} == {"train": 205, "val": 87, "test": 72}
    for split in ("train", "val", "test"):
        ids = (BCCD / "BCCD" / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        want = {i: [classes.index(n) for n in sets[i]] for i in ids}
        table = check_rows(out, split, classes, want)
        assert table.column("file_name")[0].as_py().startswith("BCCD/JPEGImages/")
        counts = np.bincount([i for v in want.values() for i in v], minlength=3).tolist()
        assert info["splits"][split]["positives_per_class"] == counts


def trimmed_coco(src_json: Path, image_dir: Path, dst_json: Path, dst_images: Path, n: int, edit=None) -> None:
    """A copy of a real COCO file reduced to its first ``n`` images (and their annotations), images copied."""
    data = json.loads(src_json.read_text())
    data["images"] = data["images"][:n]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    if edit:
        edit(data)
    dst_json.parent.mkdir(parents=True, exist_ok=True)
    dst_images.mkdir(parents=True, exist_ok=True)
    for im in data["images"]:
        shutil.copy(image_dir / im["file_name"], dst_images / im["file_name"])
    dst_json.write_text(json.dumps(data))


def test_official_coco_layout(tmp_path):
    src = tmp_path / "coco"
    for split in ("train2017", "val2017"):
        trimmed_coco(COCO_MINI / "annotations" / f"instances_{split}.json", COCO_MINI / split,
                     src / "annotations" / f"instances_{split}.json", src / split, 4)
    info = prepare_multilabel(src, tmp_path / "out", image_size=SIZE)
    assert list(info["splits"]) == ["train", "val"] and len(info["classes"]) == 80
    for split in ("train", "val"):
        classes, sets = coco_label_sets(src / "annotations" / f"instances_{split}2017.json")
        ids = info["category_ids"]
        check_rows(tmp_path / "out", split, classes, {k: sorted(ids.index(c) for c in v) for k, v in sets.items()})


def test_roboflow_layout_drops_the_placeholder_category(tmp_path):
    src = tmp_path / "aquarium"

    def roboflow(data):  # Roboflow's export: category 0 named after the dataset, the supercategory of the others
        for c in data["categories"]:
            c["supercategory"] = "creatures-aquarium"
        data["categories"].insert(0, {"id": 0, "name": "creatures-aquarium", "supercategory": "none"})

    for folder in ("train", "valid"):
        trimmed_coco(AQUARIUM / folder / "_annotations.coco.json", AQUARIUM / folder,
                     src / folder / "_annotations.coco.json", src / folder, 3, roboflow)
    info = prepare_multilabel(src, tmp_path / "out", image_size=SIZE)
    assert list(info["splits"]) == ["train", "val"]  # valid -> val
    assert info["classes"] == ["fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"]
    assert info["category_ids"] == [1, 2, 3, 4, 5, 6, 7]
    data = json.loads((src / "train" / "_annotations.coco.json").read_text())
    want = {str(im["id"]): sorted({a["category_id"] - 1 for a in data["annotations"] if a["image_id"] == im["id"]})
            for im in data["images"]}
    check_rows(tmp_path / "out", "train", info["classes"], want)


def small_voc(dst: Path, ids=("BloodImage_00000", "BloodImage_00001", "BloodImage_00003")) -> Path:
    """A VOC copy of a few real BCCD images and annotations (no ImageSets: every XML goes to train)."""
    for sub in ("Annotations", "JPEGImages"):
        (dst / sub).mkdir(parents=True)
    for i in ids:
        shutil.copy(BCCD / "BCCD" / "Annotations" / f"{i}.xml", dst / "Annotations")
        shutil.copy(BCCD / "BCCD" / "JPEGImages" / f"{i}.jpg", dst / "JPEGImages")
    return dst


def test_voc_difficult_objects_and_images_without_objects(tmp_path):
    src = small_voc(tmp_path / "voc")
    # image 00000: every WBC marked difficult -> WBC only in difficult_labels; image 00001: no objects at all
    xml = src / "Annotations" / "BloodImage_00000.xml"
    text = xml.read_text()
    text = re.sub(r"(<name>WBC</name>(?:(?!</object>).)*?<difficult>)0", r"\g<1>1", text, flags=re.S)
    xml.write_text(text)
    xml = src / "Annotations" / "BloodImage_00001.xml"
    xml.write_text(re.sub(r"<object>.*?</object>", "", xml.read_text(), flags=re.S))
    info = prepare_multilabel(src, tmp_path / "out", image_size=SIZE)
    assert info["classes"] == ["Platelets", "RBC", "WBC"]
    rows = {r["image_id"]: r for r in pq.read_table(tmp_path / "out" / "train.parquet").drop(["image"]).to_pylist()}
    assert (rows["BloodImage_00000"]["labels"], rows["BloodImage_00000"]["difficult_labels"]) == ([1], [2])
    assert (rows["BloodImage_00001"]["labels"], rows["BloodImage_00001"]["difficult_labels"]) == ([], [])
    assert rows["BloodImage_00003"]["labels"] == [0, 1, 2]
    assert info["splits"]["train"]["images_without_objects"] == 1
    # catalog rows are targets for the evaluator: the difficult-only WBC of image 00000 is ignored (-1)
    ordered = [rows[k] for k in sorted(rows)]
    assert to_target_matrix(ordered, 3, 3).tolist() == [[0, 1, -1], [0, 0, 0], [1, 1, 1]]
    info = prepare_multilabel(src, tmp_path / "out2", image_size=SIZE, drop_empty=True)
    assert info["splits"]["train"]["images"] == 2


# ----------------------------------------------------------------------------------------------- bad input

def _coco_file(tmp_path: Path, **override) -> Path:
    """A one-image COCO source from a real coco128 image; ``override`` replaces top-level keys."""
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    shutil.copy(COCO128 / "images" / "train2017" / "000000000009.jpg", src / "images")
    data = {"images": [{"id": 9, "file_name": "images/000000000009.jpg"}],
            "annotations": [{"id": 1, "image_id": 9, "category_id": 51}],
            "categories": [{"id": 51, "name": "bowl"}], **override}
    (src / "instances_x.json").write_text(json.dumps(data))
    return src


def _missing_xml(tmp_path: Path) -> Path:
    src = small_voc(tmp_path / "src")
    (src / "ImageSets" / "Main").mkdir(parents=True)
    (src / "ImageSets" / "Main" / "train.txt").write_text("BloodImage_00000\nBloodImage_00999\n")
    return src


def _voc_without_objects(tmp_path: Path) -> Path:
    src = small_voc(tmp_path / "src", ids=("BloodImage_00000",))
    xml = src / "Annotations" / "BloodImage_00000.xml"
    xml.write_text(re.sub(r"<object>.*?</object>", "", xml.read_text(), flags=re.S))
    return src


def _bad_json(tmp_path: Path) -> Path:
    src = _coco_file(tmp_path)
    (src / "instances_x.json").write_text('{"images": [')
    return src


def _bad_xml(tmp_path: Path) -> Path:
    src = small_voc(tmp_path / "src", ids=("BloodImage_00000",))
    (src / "Annotations" / "BloodImage_00000.xml").write_text("<annotation><object>")
    return src


def _missing_image(tmp_path: Path) -> Path:
    src = _coco_file(tmp_path)
    (src / "images" / "000000000009.jpg").unlink()
    return src


NEEDS = "a multi-label catalog needs labels"
BAD_INPUT = {
    "coco_no_annotations": (lambda t: _coco_file(t, annotations=[]), {},
                            r"annotation file \S+instances_x.json has no annotations: " + NEEDS),
    "coco_annotations_key_missing": (lambda t: _coco_file(t, annotations=None), {}, "has no annotations"),
    "coco_no_categories": (lambda t: _coco_file(t, categories=[]), {},
                           r"annotation file \S+instances_x.json has no categories: " + NEEDS),
    "coco_unknown_category": (lambda t: _coco_file(t, annotations=[{"id": 7, "image_id": 9, "category_id": 99}]), {},
                              "annotation 7 has category_id 99, which is not among its categories"),
    "coco_unknown_image": (lambda t: _coco_file(t, annotations=[{"id": 7, "image_id": 5, "category_id": 51}]), {},
                           "annotation 7 refers to image_id 5, which is not among its images"),
    "coco_duplicate_category": (lambda t: _coco_file(t, categories=[{"id": 51, "name": "bowl"}] * 2), {},
                                "category id 51 appears twice"),
    "coco_invalid_json": (_bad_json, {}, r"annotation file \S+instances_x.json is not valid JSON"),
    "coco_missing_image": (_missing_image, {}, "image file not found: images/000000000009.jpg of instances_x.json"),
    "annotation_file_missing": (_coco_file, {"splits": {"train": "annotations/instances_train2017.json"}},
                                r"annotation file not found: \S+instances_train2017.json \(split 'train'\)"),
    "voc_missing_xml": (_missing_xml, {}, r"annotation file not found: \S+Annotations/BloodImage_00999.xml"),
    "voc_no_objects": (_voc_without_objects, {}, "name no objects: a multi-label catalog needs labels"),
    "voc_invalid_xml": (_bad_xml, {}, r"BloodImage_00000.xml is not valid XML"),
    "no_annotations_at_all": (lambda t: (t / "src").mkdir() or t / "src", {}, "no COCO or VOC annotations in"),
    "source_missing": (lambda t: t / "nowhere", {}, "multi-label source directory not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_data_error(tmp_path, case):
    make, kwargs, message = BAD_INPUT[case]
    src = make(tmp_path)
    with pytest.raises(DataError) as err:
        prepare_multilabel(src, tmp_path / "out", image_size=SIZE, **kwargs)
    assert re.search(message, str(err.value)), str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_input_through_the_cli_wrapper_is_one_line(tmp_path):
    src = _coco_file(tmp_path, annotations=[])
    code = ("import sys; from fewray.platform.errors import run_cli; "
            "from fewray.data.sources import MULTI_LABEL_SOURCES; "
            "run_cli(lambda argv: MULTI_LABEL_SOURCES['multilabel'](sys.argv[1], sys.argv[2], 16))")
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "out")], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    want = f"error: annotation file {src / 'instances_x.json'} has no annotations: {NEEDS}"
    assert proc.stderr.strip().splitlines() == [want]


def test_docstring_examples_run():
    import fewray.algorithms.cls_heads.multi_label_cls_head as heads
    import fewray.algorithms.losses.cross_entropy_loss as ce
    import fewray.evaluation.multi_label as metrics
    import fewray.data.sources.multilabel as source

    for module in (heads, ce, metrics, source):
        result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
