"""Detection evaluators (issue 15): VOC ``eval_map`` on hand-computed cases, COCO AP through pycocotools on
real COCO / Aquarium / BCCD annotations from ../shared/data, shard independence, and bad input."""

from __future__ import annotations

import json
import pickle
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from fewray.core.errors import ConfigError, DataError
from fewray.evaluation.coco_detection import CocoDetectionEvaluator, coco_gt_from_records
from fewray.evaluation.voc_map import VOCDetectionEvaluator, average_precision, eval_map

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
COCO_VAL = DATA / "coco_mini" / "annotations" / "instances_val2017.json"
# TFA's COCO split: the 20 Pascal VOC classes are novel, the other 60 base
NOVEL_NAMES = ["airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table",
               "dog", "horse", "motorcycle", "person", "potted plant", "sheep", "couch", "train", "tv"]


def one_class(dets, gts, ignore=None):
    """eval_map inputs for one image and one class: dets rows (x1, y1, x2, y2, score), gt rows (x1, y1, x2, y2)."""
    ann = {"bboxes": np.array(gts, float).reshape(-1, 4), "labels": np.zeros(len(gts), int)}
    if ignore is not None:
        ann["bboxes_ignore"] = np.array(ignore, float).reshape(-1, 4)
        ann["labels_ignore"] = np.zeros(len(ignore), int)
    return [[np.array(dets, float).reshape(-1, 5)]], [ann]


# ---------------------------------------------------------------- eval_map: hand-computed cases

def test_true_positive():
    mean_ap, res = eval_map(*one_class([[0, 0, 10, 10, 0.9]], [[0, 0, 10, 10]]))
    assert mean_ap == 1.0 and res[0]["num_gts"] == 1 and res[0]["num_dets"] == 1
    assert res[0]["recall"].tolist() == [1.0] and res[0]["precision"].tolist() == [1.0]


def test_false_positive_ranked_first_halves_ap():
    # FP (0.95) then TP (0.9): precision [0, 1/2], recall [0, 1]; envelope 1/2 over recall 0..1 -> AP 0.5
    mean_ap, res = eval_map(*one_class([[50, 50, 60, 60, 0.95], [0, 0, 10, 10, 0.9]], [[0, 0, 10, 10]]))
    assert res[0]["precision"].tolist() == [0.0, 0.5]
    assert mean_ap == pytest.approx(0.5)
    # the same FP ranked after the TP: full recall reached at precision 1 -> AP 1
    assert eval_map(*one_class([[50, 50, 60, 60, 0.5], [0, 0, 10, 10, 0.9]], [[0, 0, 10, 10]]))[0] == 1.0


def test_duplicate_detection_is_false_positive():
    # gts A, B; dets A (0.9), A again (0.8, IoU 1 with the already matched A), B (0.7): TP, FP, TP
    # precision [1, 1/2, 2/3], recall [1/2, 1/2, 1]; area AP = 1/2 * 1 + 1/2 * 2/3 = 0.8333
    mean_ap, res = eval_map(*one_class([[0, 0, 10, 10, 0.9], [0, 0, 10, 10, 0.8], [20, 20, 30, 30, 0.7]],
                                       [[0, 0, 10, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(res[0]["precision"], [1, 0.5, 2 / 3])
    np.testing.assert_allclose(res[0]["recall"], [0.5, 0.5, 1])
    assert mean_ap == pytest.approx(0.5 + 1 / 3)


def test_detection_on_difficult_box_counts_neither_way():
    # a det on the difficult box (0.9) then a TP (0.8): the first is neither TP nor FP, so precision stays
    # 1 at full recall (AP 1, 1 gt); were the box not there the det would be a FP and AP 0.5
    dets = [[30, 30, 40, 40, 0.9], [0, 0, 10, 10, 0.8]]
    mean_ap, res = eval_map(*one_class(dets, [[0, 0, 10, 10]], ignore=[[30, 30, 40, 40]]))
    assert res[0]["num_gts"] == 1 and mean_ap == 1.0
    assert res[0]["precision"].tolist() == [0.0, 1.0]  # 0 TP / 0 dets counted at the first: 0 (mmdet's eps rule)
    assert eval_map(*one_class(dets, [[0, 0, 10, 10]]))[0] == pytest.approx(0.5)


def test_11_points_differs_from_area():
    # gts A, B; dets A (0.9) TP, FP (0.8), B (0.7) TP: precision [1, 1/2, 2/3], recall [1/2, 1/2, 1]
    # area: envelope 1 on recall (0, 1/2], 2/3 on (1/2, 1] -> 1/2 + 1/3 = 0.833333
    # 11 points: thresholds 0 .. 0.5 (6) best precision 1; 0.6 .. 1.0 (5) only recall 1 -> 2/3
    #            (6 * 1 + 5 * 2/3) / 11 = 0.848485
    inputs = one_class([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.8], [20, 20, 30, 30, 0.7]],
                       [[0, 0, 10, 10], [20, 20, 30, 30]])
    area = eval_map(*inputs)[0]
    voc07 = eval_map(*inputs, dataset="voc07")[0]
    assert area == pytest.approx(5 / 6)
    assert voc07 == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert eval_map(*inputs, eval_mode="11points")[0] == voc07
    assert average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3], "11points") == voc07


def test_legacy_coordinates_at_the_iou_edge():
    # gt (0, 0, 9, 9), det (0, 0, 9, 4). Legacy (+1): areas 10*10 and 10*5, IoU 50/100 = 0.5 >= 0.5 -> TP.
    # Plain: areas 81 and 36, IoU 36/81 = 0.444 < 0.5 -> FP.
    inputs = one_class([[0, 0, 9, 4, 0.9]], [[0, 0, 9, 9]])
    assert eval_map(*inputs, use_legacy_coordinate=True)[0] == 1.0
    assert eval_map(*inputs, use_legacy_coordinate=False)[0] == 0.0


def test_scale_ranges():
    # gts: small S (0,0,10,10) scale 10, large L (0,0,50,50) scale 50; ranges [0, 32) and [32, 1e5) (scales)
    # dets: FP (100,100,110,110) 0.95 small; S 0.9; L 0.8
    # small range: FP counted, S TP, L's det matches an out-of-range gt (neither): precision [0, 1/2, 1/2] -> AP 0.5
    # large range: small FP not counted, S's det matches an out-of-range gt (neither), L TP -> AP 1
    dets = [[100, 100, 110, 110, 0.95], [0, 0, 10, 10, 0.9], [0, 0, 50, 50, 0.8]]
    mean_ap, res = eval_map(*one_class(dets, [[0, 0, 10, 10], [0, 0, 50, 50]]), scale_ranges=[(0, 32), (32, 1e5)])
    assert res[0]["num_gts"].tolist() == [1, 1]
    assert res[0]["ap"].tolist() == pytest.approx([0.5, 1.0])
    assert mean_ap == pytest.approx([0.5, 1.0])
    # no ranges: precision [0, 1/2, 2/3], recall [0, 1/2, 1]; the envelope is 2/3 everywhere -> AP 2/3
    assert eval_map(*one_class(dets, [[0, 0, 10, 10], [0, 0, 50, 50]]))[0] == pytest.approx(2 / 3)


def test_mean_ap_only_over_classes_with_gt():
    # class 0: one TP; class 1: a det but no gt (left out of the mean, mmdet's rule)
    dets = [[np.array([[0, 0, 10, 10, 0.9]]), np.array([[20, 20, 30, 30, 0.8]])]]
    anns = [{"bboxes": np.array([[0, 0, 10, 10]]), "labels": np.array([0])}]
    mean_ap, res = eval_map(dets, anns)
    assert mean_ap == 1.0 and res[1]["num_gts"] == 0 and res[1]["num_dets"] == 1


# ---------------------------------------------------------------- VOCDetectionEvaluator on BCCD (VOC layout)

def bccd_annotations(n=24):
    """The first ``n`` BCCD images: {image id: annotation} with class indices of (RBC, WBC, Platelets)."""
    names = ["RBC", "WBC", "Platelets"]
    out = {}
    for xml in sorted((DATA / "bccd" / "BCCD" / "Annotations").glob("*.xml"))[:n]:
        boxes, labels, boxes_ign, labels_ign = [], [], [], []
        for obj in ET.parse(xml).getroot().iter("object"):
            bb = obj.find("bndbox")
            box = [float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
            difficult = obj.find("difficult") is not None and obj.find("difficult").text == "1"
            (boxes_ign if difficult else boxes).append(box)
            (labels_ign if difficult else labels).append(names.index(obj.find("name").text.strip()))
        out[xml.stem] = {"bboxes": np.array(boxes).reshape(-1, 4), "labels": np.array(labels, int),
                         "bboxes_ignore": np.array(boxes_ign).reshape(-1, 4),
                         "labels_ignore": np.array(labels_ign, int)}
    return out, names


def voc_outputs(anns, seed=0):
    """Per-image outputs: each gt box jittered a little (seeded) with a random score, plus one false positive."""
    rng = np.random.default_rng(seed)
    outs = []
    for image_id, ann in anns.items():
        boxes = ann["bboxes"] + rng.uniform(-3, 3, ann["bboxes"].shape)
        boxes = np.concatenate([boxes, [[0, 0, 30, 30]]])
        labels = np.r_[ann["labels"], rng.integers(0, 3)]
        outs.append({"image_id": image_id, "boxes": boxes, "scores": rng.uniform(0, 1, len(boxes)),
                     "labels": labels})
    return outs


def test_voc_evaluator_gt_as_detections_is_100():
    anns, names = bccd_annotations()
    ev = VOCDetectionEvaluator(anns, 3, names, class_splits={"NOVEL_CLASSES": ["Platelets"]})
    outs = [{"image_id": i, "boxes": a["bboxes"], "scores": np.ones(len(a["labels"])), "labels": a["labels"]}
            for i, a in anns.items()]
    m = ev.compute(ev.merge([ev.process(outs)]))
    assert m == {"AP50": 100.0, "NOVEL_AP50": 100.0, "AP50_RBC": 100.0, "AP50_WBC": 100.0, "AP50_Platelets": 100.0}
    assert "Platelets" in ev.last_summary


def test_voc_evaluator_shards_equal_one_pass_and_eval_map():
    anns, names = bccd_annotations()
    ev = VOCDetectionEvaluator(anns, 3, names, class_splits={"BASE_CLASSES": [0, 1], "NOVEL_CLASSES": [2]})
    outs = voc_outputs(anns)
    one = ev.compute(ev.merge([ev.process(outs)]))
    assert 0.0 < one["AP50"] < 100.0  # jitter and false positives make it a real case
    for k in (2, 3):
        parts = [pickle.loads(pickle.dumps(ev)).process(outs[i::k]) for i in range(k)]
        np.testing.assert_equal(ev.compute(ev.merge(parts[::-1])), one)
    # the same number as eval_map called directly with mmfewshot's VOC settings
    ids = list(anns)
    dets = [[o["boxes"][o["labels"] == c] for c in range(3)] for o in outs]
    dets = [[np.c_[b, o["scores"][o["labels"] == c]] for c, b in enumerate(d)] for d, o in zip(dets, outs)]
    mean_ap, res = eval_map(dets, [anns[i] for i in ids], dataset="voc07", use_legacy_coordinate=True)
    assert one["AP50"] == pytest.approx(mean_ap * 100)
    assert one["NOVEL_AP50"] == pytest.approx(res[2]["ap"] * 100)
    assert one["BASE_AP50"] == pytest.approx((res[0]["ap"] + res[1]["ap"]) / 2 * 100)


# ---------------------------------------------------------------- COCO (pycocotools)

@pytest.fixture(scope="module")
def coco_val():
    return json.loads(COCO_VAL.read_text())


@pytest.fixture(scope="module")
def coco_splits(coco_val):
    novel = [c["id"] for c in coco_val["categories"] if c["name"] in NOVEL_NAMES]
    assert len(novel) == 20
    return {"BASE_CLASSES": [c["id"] for c in coco_val["categories"] if c["id"] not in novel],
            "NOVEL_CLASSES": novel}


def gt_as_outputs(gt, image_ids=None, seed=None):
    """Per-image outputs holding each non-crowd gt box (x1, y1, x2, y2) with score 1 (or seeded random scores,
    jitter and one false positive per image when ``seed`` is given)."""
    rng = np.random.default_rng(seed) if seed is not None else None
    by_image = {img["id"]: [] for img in gt["images"]}
    for a in gt["annotations"]:
        if not a["iscrowd"]:
            by_image[a["image_id"]].append(a)
    outs = []
    for image_id in (image_ids if image_ids is not None else by_image):
        anns = by_image[image_id]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
        labels = np.array([a["category_id"] for a in anns], int)
        scores = np.ones(len(anns))
        if rng is not None:
            boxes = np.clip(boxes + rng.uniform(-4, 4, boxes.shape), 0, None)
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
            boxes = np.concatenate([boxes, [[0, 0, 40, 40]]])
            labels = np.r_[labels, rng.choice(labels) if len(labels) else 1]
            scores = rng.uniform(0, 1, len(boxes))
        outs.append({"image_id": image_id, "boxes": boxes, "scores": scores, "labels": labels})
    return outs


@pytest.fixture(scope="module")
def coco_perfect(coco_val, coco_splits):
    ev = CocoDetectionEvaluator(coco_val, class_splits=coco_splits, classwise=True)
    return ev, ev.compute(ev.merge([ev.process(gt_as_outputs(coco_val))]))


def test_coco_gt_as_detections_is_100(coco_perfect):
    ev, m = coco_perfect
    for key in ("AP", "AP50", "AP75", "BASE_AP", "BASE_AP50", "NOVEL_AP", "NOVEL_AP50"):
        assert m[key] == pytest.approx(100.0), key
    per_class = {k: v for k, v in m.items() if k.startswith("AP_")}
    assert len(per_class) == 80 and min(per_class.values()) == pytest.approx(100.0)
    assert set(ev.metrics) <= set(m) and all(ev.mode(k) == "max" for k in ev.metrics)
    assert "NOVEL_CLASSES (20 categories, 206 images)" in ev.last_summary
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in ev.last_summary


def test_coco_annotation_id_zero_still_matches():
    # Roboflow exports number annotations from 0; pycocotools alone would count the match to id 0 as a miss
    gt = json.loads((DATA / "aquarium" / "valid" / "_annotations.coco.json").read_text())
    assert min(a["id"] for a in gt["annotations"]) == 0
    first = sorted(img["id"] for img in gt["images"])[:8]
    ev = CocoDetectionEvaluator(gt)
    m = ev.compute(ev.process(gt_as_outputs(gt, first)))
    assert m["AP"] == pytest.approx(100.0) and m["AP50"] == pytest.approx(100.0)


CATS = [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]


def test_coco_detection_on_crowd_region_is_not_false_positive():
    # one image: a person A and a crowd region C of persons; dets on C (0.9) and on A (0.8)
    gt = coco_gt_from_records([{"image_id": 1, "width": 200, "height": 200,
                                "boxes": [[10, 10, 60, 90], [100, 20, 190, 180]], "labels": [1, 1],
                                "iscrowd": [False, True]}], CATS)
    ev = CocoDetectionEvaluator(gt)
    out = [{"image_id": 1, "boxes": [[110, 30, 150, 100], [10, 10, 60, 90]], "scores": [0.9, 0.8], "labels": [1, 1]}]
    assert ev.compute(ev.process(out))["AP"] == pytest.approx(100.0)
    # the same det where no crowd region is: a false positive ranked first -> precision 1/2 at every recall
    gt_no_crowd = coco_gt_from_records([{"image_id": 1, "width": 200, "height": 200, "boxes": [[10, 10, 60, 90]],
                                         "labels": [1]}], CATS)
    ev = CocoDetectionEvaluator(gt_no_crowd)
    assert ev.compute(ev.process(out))["AP"] == pytest.approx(50.0)


def test_coco_false_positive_lowers_ap_by_hand():
    # gts: person A, person B (two images); dets: A 0.9 TP, FP 0.8, B 0.7 TP (all at IoU 1)
    # precision [1, 1/2, 2/3], recall [1/2, 1/2, 1]; COCO's 101-point interpolation: recall 0..0.5 (51 points)
    # precision 1, 0.51..1 (50 points) 2/3 -> AP = (51 + 50 * 2/3) / 101 = 83.498 %
    gt = coco_gt_from_records([{"image_id": 1, "width": 100, "height": 100, "boxes": [[0, 0, 50, 50]], "labels": [1]},
                               {"image_id": 2, "width": 100, "height": 100, "boxes": [[20, 20, 80, 80]],
                                "labels": [1]}], CATS)
    ev = CocoDetectionEvaluator(gt, class_splits={"NOVEL_CLASSES": ["person"]})
    outs = [{"image_id": 1, "boxes": [[0, 0, 50, 50], [60, 60, 99, 99]], "scores": [0.9, 0.8], "labels": [1, 1]},
            {"image_id": 2, "boxes": [[20, 20, 80, 80]], "scores": [0.7], "labels": [1]}]
    m = ev.compute(ev.process(outs))
    expected = (51 + 50 * 2 / 3) / 101 * 100
    assert m["AP"] == pytest.approx(expected) and m["AP50"] == pytest.approx(expected)
    assert m["NOVEL_AP"] == pytest.approx(expected)
    assert m["AP"] < 100.0


def test_coco_shards_equal_one_pass(coco_val, coco_splits):
    image_ids = sorted(img["id"] for img in coco_val["images"])[:40]
    ev = CocoDetectionEvaluator(coco_val, class_splits=coco_splits, classwise=True)
    outs = gt_as_outputs(coco_val, image_ids, seed=0)
    one = ev.compute(ev.merge([ev.process(outs)]))
    assert 0.0 < one["AP"] < 100.0
    shipped = pickle.loads(pickle.dumps(ev))  # what a Ray task gets: no ground truth
    assert shipped.gt is None and len(pickle.dumps(ev)) < 10_000
    for k in (2, 3):
        parts = [shipped.process(outs[i::k]) for i in range(k)]
        np.testing.assert_equal(ev.compute(ev.merge(parts[::-1])), one)
    with pytest.raises(RuntimeError, match="pickled copy"):
        shipped.compute(shipped.merge([shipped.process(outs)]))


def test_coco_no_detections_gives_zeros(coco_val, coco_splits):
    image_ids = sorted(img["id"] for img in coco_val["images"])[:30]
    ev = CocoDetectionEvaluator(coco_val, class_splits=coco_splits, classwise=True)
    empty = [{"image_id": i, "boxes": np.zeros((0, 4)), "scores": [], "labels": []} for i in image_ids]
    m = ev.compute(ev.merge([ev.process(empty)]))
    for key in ("AP", "AP50", "AP75", "BASE_AP", "BASE_AP50", "BASE_AP75", "NOVEL_AP", "NOVEL_AP50", "NOVEL_AP75"):
        assert m[key] == 0.0, key
    assert all(v == 0.0 for k, v in m.items() if k.startswith("AP_")) and any(k.startswith("AP_") for k in m)


# ---------------------------------------------------------------- bad input

def test_bad_input_is_named():
    with pytest.raises(DataError, match="no 'annotations'"):
        CocoDetectionEvaluator({"images": [], "categories": CATS})
    gt = coco_gt_from_records([{"image_id": 5, "width": 10, "height": 10, "boxes": [[0, 0, 5, 5]], "labels": [1]}],
                              CATS)
    with pytest.raises(ConfigError, match=r"class_splits\['NOVEL_CLASSES'\]: category id 9"):
        CocoDetectionEvaluator(gt, class_splits={"NOVEL_CLASSES": [9]})
    with pytest.raises(DataError, match="image 3: label 7 is not a category id"):
        coco_gt_from_records([{"image_id": 3, "width": 9, "height": 9, "boxes": [[0, 0, 1, 1]], "labels": [7]}], CATS)
    ev = CocoDetectionEvaluator(gt)
    part = ev.process([{"image_id": 5, "boxes": [[0, 0, 5, 5]], "scores": [1.0], "labels": [1]}])
    with pytest.raises(ValueError, match="image 5 was evaluated twice"):
        ev.merge([part, part])
    with pytest.raises(DataError, match="image id 6 of the detections"):
        ev.compute(ev.process([{"image_id": 6, "boxes": [[0, 0, 5, 5]], "scores": [1.0], "labels": [1]}]))
    with pytest.raises(ValueError, match="label 3 is not a category id"):
        ev.process([{"image_id": 5, "boxes": [[0, 0, 5, 5]], "scores": [1.0], "labels": [3]}])
    with pytest.raises(DataError, match="image x: labels holds class index 4"):
        VOCDetectionEvaluator({"x": {"bboxes": [[0, 0, 1, 1]], "labels": [4]}}, 2, ["a", "b"])
