"""Few-shot detection data (issue 15): class splits, COCO / VOC datasets, TFA's K-shot sets, the detection catalog,
``prepare_data.py detection`` and the training batch builder, on the real data in ../shared/data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewray.core.errors import DataError
from fewray.data.detection import (
    COCO_SPLIT,
    VOC_SPLIT,
    DetectionBatchBuilder,
    FewShotCocoDataset,
    FewShotVOCDataset,
    apply_shots,
    check_detection_catalog,
    load_coco_records,
    prepare_detection,
    read_detection_split,
    read_tfa_coco_shots,
    read_tfa_voc_shots,
    resize_for_detection,
    sample_shots,
    select_classes,
    write_detection_catalog,
)
from fewray.data.detection.records import count_boxes

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
COCO128 = DATA / "coco128" / "instances_coco128.json"
MINI_TRAIN = DATA / "coco_mini" / "annotations" / "instances_train2017.json"
MINI_VAL = DATA / "coco_mini" / "annotations" / "instances_val2017.json"
BCCD = DATA / "bccd" / "BCCD"
BCCD_SPLIT = {"ALL_CLASSES": ["RBC", "WBC", "Platelets"], "BASE_CLASSES": ["RBC", "WBC"], "NOVEL_CLASSES": ["Platelets"]}


@pytest.fixture(scope="module")
def coco_train():
    """coco_mini train2017 + coco128 as one dataset, every image and annotation kept."""
    return FewShotCocoDataset([str(MINI_TRAIN), str(COCO128)], filter_empty_gt=False)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg, msg
    return msg


# ------------------------------------------------------------------------------------------------ splits

def test_class_splits_are_tfa_and_mmfewshot():
    assert len(COCO_SPLIT["ALL_CLASSES"]) == 80 and len(COCO_SPLIT["BASE_CLASSES"]) == 60
    assert set(COCO_SPLIT["BASE_CLASSES"]) | set(COCO_SPLIT["NOVEL_CLASSES"]) == set(COCO_SPLIT["ALL_CLASSES"])
    for k, novel in ((1, {"bird", "bus", "cow", "motorbike", "sofa"}), (2, {"aeroplane", "bottle", "cow", "horse", "sofa"}),
                     (3, {"boat", "cat", "motorbike", "sheep", "sofa"})):
        assert set(VOC_SPLIT[f"NOVEL_CLASSES_SPLIT{k}"]) == novel
        assert VOC_SPLIT[f"ALL_CLASSES_SPLIT{k}"][15:] == VOC_SPLIT[f"NOVEL_CLASSES_SPLIT{k}"]
        assert VOC_SPLIT[f"ALL_CLASSES_SPLIT{k}"][:15] == VOC_SPLIT[f"BASE_CLASSES_SPLIT{k}"]
    # the file's categories, in id order, are TFA's ALL_CLASSES
    _, classes, ids = load_coco_records([COCO128])
    assert classes == COCO_SPLIT["ALL_CLASSES"] and ids[:5] == [1, 2, 3, 4, 5] and ids[-1] == 90


# -------------------------------------------------------------------------------------------------- COCO

def test_coco_files_are_one_dataset_with_the_readme_counts(coco_train):
    per_file = {}
    for path in (MINI_TRAIN, COCO128):
        recs, _, _ = load_coco_records([path])
        per_file[path.parent.name] = (len(recs), int(sum(len(r["labels"]) for r in recs)))
    assert per_file == {"annotations": (209, 1899), "coco128": (128, 929)}  # ../shared/data/README.md
    assert len(coco_train) == 337 and int(coco_train.num_boxes(include_ignore=True).sum()) == 1899 + 929
    assert coco_train.CLASSES == coco_train.ALL_CLASSES == COCO_SPLIT["ALL_CLASSES"]
    assert coco_train.category_ids[coco_train.CLASSES.index("toothbrush")] == 90
    r = coco_train.data_infos[0]
    assert r["boxes"].dtype == np.float32 and r["boxes"].shape[1] == 4 and r["labels"].dtype == np.int64
    assert Path(r["path"]).is_file() and Path(r["path"]).is_absolute()
    assert all((rec["boxes"][:, 2:] <= [rec["width"], rec["height"]]).all() for rec in coco_train.data_infos)  # clipped
    assert int(sum(r["ignore"].sum() for r in coco_train.data_infos)) == 18  # coco_mini's crowd annotations
    # mmdet's filter_empty_gt (default): images without a non-ignored box go
    kept = FewShotCocoDataset([str(MINI_TRAIN), str(COCO128)])
    assert 330 <= len(kept) < 337 and all((~r["ignore"]).any() for r in kept.data_infos)


def test_base_classes_drop_novel_annotations(coco_train):
    base = FewShotCocoDataset([str(MINI_TRAIN), str(COCO128)], classes="BASE_CLASSES", filter_empty_gt=False)
    assert base.CLASSES == COCO_SPLIT["BASE_CLASSES"] and len(base.category_ids) == 60
    all_counts = coco_train.num_boxes(include_ignore=True)
    want = sum(int(all_counts[coco_train.CLASSES.index(c)]) for c in COCO_SPLIT["BASE_CLASSES"])
    assert int(base.num_boxes(include_ignore=True).sum()) == want < int(all_counts.sum())
    person = coco_train.CLASSES.index("person")  # novel: its boxes are gone, labels index the 60 base classes
    assert all(r["labels"].max(initial=-1) < 60 for r in base.data_infos)
    assert int(all_counts[person]) > 0 and "person" not in base.CLASSES
    novel = FewShotCocoDataset([str(MINI_TRAIN)], classes="NOVEL_CLASSES")
    assert {novel.CLASSES[i] for r in novel.data_infos for i in r["labels"]} <= set(COCO_SPLIT["NOVEL_CLASSES"])


def test_k_shots_per_class_nested_and_seeded(coco_train):
    records, classes = coco_train.data_infos, coco_train.CLASSES
    novel = {classes.index(c): c for c in COCO_SPLIT["NOVEL_CLASSES"]}
    have = count_boxes(records, len(classes))
    previous = None
    for k in (1, 2, 3, 5, 10):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sel = sample_shots(records, len(classes), {c: k for c in novel}, seed=0, class_names=classes)
        short = {re.search(r"class '(.+?)'", str(w.message)).group(1) for w in caught}
        for c, name in novel.items():
            n = sum(len(ids) for _, ids in sel[c])
            assert n == k or (name in short and n < k), (name, k, n, int(have[c]))
        if previous is not None:  # nested: every instance of the smaller set is in the larger one
            for c in novel:
                small = {(i, a) for i, ids in previous[c] for a in ids}
                assert small <= {(i, a) for i, ids in sel[c] for a in ids}, (novel[c], k)
        previous = sel
    again = sample_shots(records, len(classes), {c: 5 for c in novel}, seed=0, class_names=classes)
    other = sample_shots(records, len(classes), {c: 5 for c in novel}, seed=1, class_names=classes)
    assert again == sample_shots(list(reversed(records)), len(classes), {c: 5 for c in novel}, 0, class_names=classes)
    assert other != again
    # the dataset: K instances of each novel class, every base instance (num_base_shots None), no ignore boxes
    ds = FewShotCocoDataset([str(MINI_TRAIN), str(COCO128)], num_novel_shots=1, seed=0, filter_empty_gt=False)
    counts = ds.num_boxes()
    assert all(int(counts[c]) == 1 for c in novel)
    base = [classes.index(c) for c in COCO_SPLIT["BASE_CLASSES"]]
    picked = {(r["image_id"], a) for r in ds.data_infos for a, lab in zip(r["ann_ids"], r["labels"]) if lab in novel}
    assert picked == {(i, a) for c in novel for i, ids in sample_shots(records, 80, {c: 1}, 0, classes)[c] for a in ids}
    assert int(counts[base].sum()) == int(have[base].sum())


def test_a_class_with_fewer_than_k_instances_warns(coco_train):
    records, classes = coco_train.data_infos, coco_train.CLASSES
    have = count_boxes(records, len(classes))
    c = int(np.argmin(np.where(have > 0, have, 10**9)))
    k = int(have[c]) + 1
    with pytest.warns(UserWarning, match=rf"class '{classes[c]}' has {have[c]} instances for {k} shots \(all it has\)"):
        sel = sample_shots(records, len(classes), {c: k}, seed=3, class_names=classes)
    assert sum(len(ids) for _, ids in sel[c]) == int(have[c])
    with pytest.warns(UserWarning, match=rf"class '{classes[c]}' has"):
        FewShotCocoDataset([str(MINI_TRAIN), str(COCO128)], ann_shot_filter={classes[c]: k})


def test_save_dataset_round_trip(tmp_path):
    ds = FewShotCocoDataset([str(MINI_TRAIN), str(COCO128)], classes="NOVEL_CLASSES", num_novel_shots=3, seed=7)
    path = ds.save_dataset(tmp_path / "saved" / "novel_3shot.json")
    saved = json.loads(path.read_text())
    assert len(saved["annotations"]) == 60 and {c["name"] for c in saved["categories"]} == set(COCO_SPLIT["NOVEL_CLASSES"])
    again = FewShotCocoDataset(str(path), classes="NOVEL_CLASSES")
    assert again.CLASSES == ds.CLASSES and again.category_ids == ds.category_ids and len(again) == len(ds)
    for a, b in zip(ds.data_infos, again.data_infos):
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert np.array_equal(value, b[key]) and np.asarray(value).dtype == np.asarray(b[key]).dtype, key


def test_tfa_shot_files(tmp_path, coco_train):
    records, classes = coco_train.data_infos, coco_train.CLASSES
    cat = classes.index("cat")
    picks = sample_shots(records, len(classes), {cat: 2}, seed=0, class_names=classes)[cat]
    anns = [{"id": a, "image_id": i, "category_id": 17} for i, ids in picks for a in ids]
    (tmp_path / "full_box_2shot_cat_trainval.json").write_text(json.dumps({"images": [], "annotations": anns}))
    assert read_tfa_coco_shots(tmp_path / "full_box_2shot_cat_trainval.json", records, cat) == picks
    ds = FewShotCocoDataset([str(MINI_TRAIN), str(COCO128)], classes=["cat", "dog"], ann_shot_filter={"cat": 2},
                            shot_files=str(tmp_path))
    assert int(ds.num_boxes()[0]) == 2
    with pytest.raises(DataError) as err:  # no file for dog
        FewShotCocoDataset([str(MINI_TRAIN)], classes=["cat", "dog"], ann_shot_filter={"dog": 1}, shot_files=str(tmp_path))
    assert "shot file not found" in one_line(err) and "full_box_1shot_dog_trainval.json" in str(err.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "full_box_1shot_cat_trainval.json").write_text(json.dumps({"annotations": [{"id": 1, "image_id": 12345}]}))
    with pytest.raises(DataError) as err:
        FewShotCocoDataset([str(MINI_TRAIN)], classes=["cat"], ann_shot_filter={"cat": 1}, shot_files=str(bad))
    assert "names image 12345, which the dataset does not have" in one_line(err)
    voc = FewShotVOCDataset(str(BCCD), "train", "ALL_CLASSES", BCCD_SPLIT)
    (tmp_path / "box_1shot_WBC_train.txt").write_text("datasets/BCCD/JPEGImages/BloodImage_00001.jpg\n")
    wbc = read_tfa_voc_shots(tmp_path / "box_1shot_WBC_train.txt", voc.data_infos, 1)
    assert len(wbc) == 1 and apply_shots(voc.data_infos, {1: wbc})[0]["file_name"] == "BloodImage_00001.jpg"


def test_roboflow_aquarium_train_split():
    ds = FewShotCocoDataset(str(DATA / "aquarium" / "train"), classes=None, filter_empty_gt=False)
    assert len(ds) == 448 and len(ds.CLASSES) == 7 and ds.CLASSES[:2] == ["fish", "jellyfish"]
    assert int(ds.num_boxes(include_ignore=True).sum()) == 3324 and all(Path(r["path"]).is_file() for r in ds.data_infos)
    with pytest.raises(DataError) as err:  # COCO_SPLIT's names are not aquarium's
        FewShotCocoDataset(str(DATA / "aquarium" / "train"))
    assert re.search(r"class split ALL_CLASSES names 'person', which \S+_annotations.coco.json does not have "
                     r"\(classes: fish, jellyfish", one_line(err))
    with pytest.raises(DataError) as err:  # a real defect of the release: two zero-size boxes in test/
        FewShotCocoDataset(str(DATA / "aquarium" / "test"), classes=None)
    assert "image 10 annotation 70: box [223.5, 151.5, 223.5, 151.5] (x1, y1, x2, y2) has non-positive" in one_line(err)


# --------------------------------------------------------------------------------------------------- VOC

def test_bccd_voc_with_a_user_class_split():
    ds = FewShotVOCDataset(str(BCCD), "trainval", "ALL_CLASSES", BCCD_SPLIT, filter_empty_gt=False)
    assert ds.CLASSES == ["RBC", "WBC", "Platelets"] and len(ds) == 292
    r = ds.data_infos[0]
    assert r["file_name"] == "BloodImage_00000.jpg" and r["image_id"] == 1 and (r["width"], r["height"]) == (640, 480)
    assert r["boxes"][0].tolist() == [259.0, 176.0, 491.0, 376.0]  # WBC 260,177,491,376 made 0-based
    novel = FewShotVOCDataset(str(BCCD), "trainval", "NOVEL_CLASSES", BCCD_SPLIT)
    assert novel.CLASSES == ["Platelets"] and int(novel.num_boxes()[0]) == int(ds.num_boxes()[2])
    shots = FewShotVOCDataset(str(BCCD), "trainval", "ALL_CLASSES", BCCD_SPLIT, num_novel_shots=5, seed=0)
    counts = shots.num_boxes()
    assert int(counts[2]) == 5 and counts[:2].tolist() == ds.num_boxes()[:2].tolist()


def _voc(tmp_path: Path, objects: str = "", size: str = "<size><width>32</width><height>24</height></size>",
         image: bool = True, name: str = "img1") -> Path:
    root = tmp_path / "VOC"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    if image:
        Image.new("RGB", (32, 24), (90, 20, 200)).save(root / "JPEGImages" / f"{name}.jpg")
    (root / "Annotations" / f"{name}.xml").write_text(f"<annotation><filename>{name}.jpg</filename>{size}{objects}</annotation>")
    (root / "ImageSets" / "Main" / "train.txt").write_text(f"{name}\n")
    return root


def _obj(name: str, box: tuple, difficult: int = 0) -> str:
    x1, y1, x2, y2 = box
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def test_voc_difficult_boxes_are_ignore_boxes(tmp_path):
    root = _voc(tmp_path, _obj("WBC", (2, 2, 10, 10)) + _obj("RBC", (11, 3, 30, 20), difficult=1))
    ds = FewShotVOCDataset(str(root), "train", "ALL_CLASSES", BCCD_SPLIT)
    assert ds.data_infos[0]["ignore"].tolist() == [False, True] and ds.data_infos[0]["labels"].tolist() == [1, 0]
    assert FewShotVOCDataset(str(root), "train", "ALL_CLASSES", BCCD_SPLIT, use_difficult=True).data_infos[0]["ignore"].tolist() == [False, False]
    assert len(FewShotVOCDataset(str(root), "train", ["RBC"], BCCD_SPLIT)) == 0  # only a difficult RBC: no target left
    assert count_boxes(FewShotVOCDataset(str(root), "train", ["RBC"], BCCD_SPLIT, filter_empty_gt=False).data_infos,
                       1, include_ignore=True).tolist() == [1]


VOC_BAD = {
    "no_size": (dict(objects=_obj("RBC", (2, 2, 9, 9)), size=""), r"annotation file \S+img1.xml has no <size>"),
    "missing_image": (dict(objects=_obj("RBC", (2, 2, 9, 9)), image=False), r"image file not found: \S+JPEGImages/img1.jpg"),
    "outside": (dict(objects=_obj("RBC", (2, 2, 40, 9))), r"img1.xml: object #0 \(RBC\): box \[1, 1, 40, 9\] .* lies outside the 32x24 image"),
    "non_positive": (dict(objects=_obj("RBC", (9, 2, 8, 9))), r"object #0 \(RBC\): box \[8, 1, 8, 9\] .* has non-positive width or height"),
    "unknown_class": (dict(objects=_obj("zebra", (2, 2, 9, 9))), r"object #0 \(zebra\): class 'zebra' is not in the class list \(RBC, WBC, Platelets\)"),
}


@pytest.mark.parametrize("case", sorted(VOC_BAD))
def test_voc_bad_input_is_one_line(tmp_path, case):
    kwargs, message = VOC_BAD[case]
    root = _voc(tmp_path, **kwargs)
    with pytest.raises(DataError) as err:
        FewShotVOCDataset(str(root), "train", "ALL_CLASSES", BCCD_SPLIT)
    assert re.search(message, one_line(err)), str(err.value)


def test_voc_missing_image_set_names_the_others():
    with pytest.raises(DataError) as err:
        FewShotVOCDataset(str(BCCD), "trainval2012", "ALL_CLASSES", BCCD_SPLIT)
    assert "image set not found" in one_line(err) and "(image sets: test, train, trainval, val)" in str(err.value)


def _coco(tmp_path: Path, annotations: list, images: list | None = None, name: str = "a.json",
          write_images: bool = True) -> Path:
    folder = tmp_path / "coco"
    folder.mkdir(exist_ok=True)
    images = images if images is not None else [{"id": 1, "file_name": "1.jpg", "width": 32, "height": 24}]
    if write_images:
        for im in images:
            Image.new("RGB", (im["width"], im["height"]), (10, 200, 30)).save(folder / im["file_name"])
    data = {"images": images, "annotations": annotations, "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "dog"}]}
    (folder / name).write_text(json.dumps(data))
    return folder / name


def _ann(aid: int, bbox: list, cat: int = 3, image: int = 1) -> dict:
    return {"id": aid, "image_id": image, "category_id": cat, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}


COCO_BAD = {
    "unknown_category": (lambda t: [_coco(t, [_ann(5, [1, 1, 5, 5], cat=99)])],
                         r"a.json: annotation 5 has category_id 99, which is not among its categories"),
    "non_positive_box": (lambda t: [_coco(t, [_ann(6, [1, 1, 0, 5])])],
                         r"a.json: image 1 annotation 6: box \[1, 1, 1, 6\] \(x1, y1, x2, y2\) has non-positive"),
    "box_outside": (lambda t: [_coco(t, [_ann(7, [20, 1, 14, 5])])],
                    r"a.json: image 1 annotation 7: box \[20, 1, 34, 6\] .* lies outside the 32x24 image \(by more than 1 pixel\)"),
    "missing_image": (lambda t: [_coco(t, [_ann(8, [1, 1, 5, 5])], write_images=False)],
                      r"image file not found: 1.jpg \(image id 1 of \S+a.json; looked in"),
    "missing_file": (lambda t: [t / "nowhere.json"], r"annotation file not found: \S+nowhere.json"),
    "unparsable_file": (lambda t: [t / "x.json"] if (t / "x.json").write_text("{oops") else [],
                        r"annotation file \S+x.json is not valid JSON"),
    "id_in_two_files_differs": (lambda t: [_coco(t, [_ann(1, [1, 1, 5, 5])]), _coco(t, [_ann(2, [1, 1, 9, 9])], name="b.json")],
                                r"image id 1 is in \S+a.json and in \S+b.json with different file names, sizes or annotations"),
}


@pytest.mark.parametrize("case", sorted(COCO_BAD))
def test_coco_bad_input_is_one_line(tmp_path, case):
    make, message = COCO_BAD[case]
    files = [str(f) for f in make(tmp_path)]
    with pytest.raises(DataError) as err:
        FewShotCocoDataset(files, classes=None)
    assert re.search(message, one_line(err)), str(err.value)


def test_coco_boxes_within_a_pixel_are_clipped_and_identical_duplicates_kept_once(tmp_path):
    a = _coco(tmp_path, [_ann(1, [-0.6, 2, 33.4, 5]), _ann(2, [3, 3, 4, 4], cat=7)])
    b = tmp_path / "coco" / "b.json"
    shutil.copy(a, b)
    ds = FewShotCocoDataset([str(a), str(b)], classes=None)
    assert len(ds) == 1 and ds.data_infos[0]["boxes"][0].tolist() == [0.0, 2.0, 32.0, 7.0]
    assert ds.CLASSES == ["car", "dog"] and ds.category_ids == [3, 7]
    with pytest.raises(DataError) as err:
        FewShotCocoDataset(str(a), classes=["car", "zebra"])
    assert re.search(r"classes names 'zebra', which \S+a.json does not have \(classes: car, dog\)", one_line(err))
    with pytest.raises(DataError) as err:
        FewShotCocoDataset(str(a), classes=["car", "dog"], ann_shot_filter={"cat": 1})
    assert "ann_shot_filter names class 'cat', which is not one of the dataset's classes (car, dog)" in one_line(err)
    with pytest.raises(DataError) as err:
        FewShotCocoDataset(str(a), classes=["car"], num_novel_shots=0)
    assert "num_novel_shots must be an integer >= 1, got 0" in one_line(err)


# ----------------------------------------------------------------------------------------------- catalog

def test_catalog_round_trip(tmp_path, coco_train):
    records = coco_train.data_infos[:6] + [r for r in coco_train.data_infos if r["ignore"].any()][:2]
    info = write_detection_catalog(tmp_path / "cat", {"train": records[:5], "test": records[5:]}, coco_train.CLASSES,
                                   COCO_SPLIT, coco_train.category_ids, str(DATA))
    assert info["task"] == "detection" and info["splits"]["test"]["images"] == 3
    assert check_detection_catalog(str(tmp_path / "cat"))["class_splits"]["NOVEL_CLASSES"][0] == "airplane"
    back = read_detection_split(str(tmp_path / "cat"), "train") + read_detection_split(str(tmp_path / "cat"), "test")
    for a, b in zip(records, back):
        assert b["image"] == Path(a["path"]).read_bytes()  # the original file, not re-encoded
        for key in ("boxes", "labels", "ignore", "ann_ids", "areas"):
            assert b[key].tobytes() == a[key].tobytes() and b[key].dtype == a[key].dtype, key
        assert (b["image_id"], b["file_name"], b["width"], b["height"]) == (a["image_id"], a["file_name"], a["width"], a["height"])
    assert "image" not in read_detection_split(str(tmp_path / "cat"), "test", images=False)[0]
    with pytest.raises(DataError) as err:
        read_detection_split(str(tmp_path / "cat"), "val")
    assert "split 'val' not found in catalog" in one_line(err) and "(splits: test, train)" in str(err.value)
    with pytest.raises(DataError) as err:
        write_detection_catalog(tmp_path / "c2", {"train": records}, coco_train.CLASSES, {"NOVEL_CLASSES": ["zebra", "unicorn"]},
                                None, "src")
    assert "class split NOVEL_CLASSES names 'unicorn', which src does not have" in one_line(err)
    assert not (tmp_path / "c2").exists()


def test_other_catalogs_are_refused_in_one_line(tmp_path):
    from fewray.data.catalog import write_catalog_info, write_split

    few = tmp_path / "few"
    write_split(few, "train", {"image": [b""], "label": [0], "class_name": ["a"]})
    write_catalog_info(few, {"dataset": "x", "image_size": 28})
    with pytest.raises(DataError) as err:
        read_detection_split(str(few), "train")
    assert one_line(err).startswith(f"{few} is a few-shot classification catalog, not a detection catalog (catalog.json task")
    multi = tmp_path / "multi"
    write_split(multi, "train", {"image": [b""]})
    write_catalog_info(multi, {"dataset": "x", "task": "multi_label"})
    with pytest.raises(DataError) as err:
        check_detection_catalog(str(multi))
    assert "is a multi-label catalog, not a detection catalog (catalog.json task: multi_label)" in one_line(err)


def test_prepare_detection_from_roboflow_folders_and_bad_split_files(tmp_path):
    split = tmp_path / "split.yaml"
    split.write_text("class_splits: {ALL_CLASSES: [fish, jellyfish, penguin, puffin, shark, starfish, stingray], "
                     "NOVEL_CLASSES: [puffin, stingray]}\ntrain: [aquarium/train]\nval: [aquarium/valid]\n")
    info = prepare_detection(DATA, tmp_path / "aq", split_file=split)
    assert info["format"] == "coco" and info["splits"]["train"]["images"] == 448 and info["splits"]["val"]["images"] == 127
    assert info["class_splits"]["NOVEL_CLASSES"] == ["puffin", "stingray"] and info["category_ids"] == list(range(1, 8))
    cases = {
        "overlap": ("train: [coco_mini/annotations/instances_val2017.json]\n"
                    "test: [{file: coco_mini/annotations/instances_val2017.json, part: 2/2}]\n",
                    r"image id \d+ \(\d+.jpg\) is in split 'train' and in split 'test': a catalog must not test on"),
        "mixed": ("train: [coco128/instances_coco128.json]\ntest: [bccd/BCCD/ImageSets/Main/test.txt]\n",
                  "mixes COCO files and VOC image sets"),
        "missing": ("train: [coco_mini/annotations/instances_train2014.json]\n",
                    r"annotation file not found: \S+instances_train2014.json \(split 'train'\)"),
        "classes": ("class_splits: voc1\ntrain: [coco128/instances_coco128.json]\n",
                    r"class split ALL_CLASSES names 'aeroplane', which \S+ does not have"),
    }
    for name, (text, message) in cases.items():
        split.write_text(text)
        with pytest.raises(DataError) as err:
            prepare_detection(DATA, tmp_path / name, split_file=split)
        assert re.search(message, one_line(err)), (name, str(err.value))
        assert not (tmp_path / name).exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "pipelines" / "prepare_data.py"), "detection", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_prepare_data_detection_command(tmp_path):
    out = tmp_path / "coco_fsdet"
    proc = _cli("--source", str(DATA), "--split-file", "configs/detection/coco_split.yaml", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((out / "catalog.json").read_text())
    assert info["dataset"] == "coco_fsdet" and info["task"] == "detection" and len(info["classes"]) == 80
    assert {k: (v["images"], v["boxes"]) for k, v in info["splits"].items()} == {
        "train": (337, 2828), "val": (103, 923), "test": (206, 1786)}
    assert info["class_splits"]["NOVEL_CLASSES"] == COCO_SPLIT["NOVEL_CLASSES"]
    test = read_detection_split(str(out), "test", images=False)
    assert sum(len(r["labels"]) for r in test) == 1786
    bad = {("--class-splits", "voc2"): r"class split ALL_CLASSES names 'diningtable', which \S+ does not have",
           ("--split-file", "configs/detection/nowhere.yaml"): "split file not found: configs/detection/nowhere.yaml",
           ("--image-size", "64"): "--image-size does not apply to detection"}
    for extra, message in bad.items():
        proc = _cli("--source", str(DATA), "--split-file", "configs/detection/coco_split.yaml", "--out",
                    str(tmp_path / "bad"), *extra)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), lines
        assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------------------------- builder

@pytest.fixture(scope="module")
def bccd_catalog(tmp_path_factory):
    ds = FewShotVOCDataset(str(BCCD), "test", "ALL_CLASSES", BCCD_SPLIT)
    out = tmp_path_factory.mktemp("det") / "bccd"
    write_detection_catalog(out, {"train": ds.data_infos[:6]}, ds.CLASSES, BCCD_SPLIT, None, str(BCCD))
    return read_detection_split(str(out), "train")


def test_builder_rows(bccd_catalog):
    records = bccd_catalog
    plain = DetectionBatchBuilder(records, 4, seed=0, min_size=96, max_size=120, flip=False)
    row = plain(3)
    most = max(len(r["labels"]) for r in records)
    assert row["img"].shape == (4, 3, 120, 120) and row["img"].dtype == np.uint8
    assert row["boxes"].shape == (4, most, 4) and row["labels"].shape == (4, most) and row["img_hw"].dtype == np.int32
    by_id = {r["image_id"]: r for r in records}
    for i, iid in enumerate(row["image_id"].tolist()):
        rec, (h, w) = by_id[iid], row["img_hw"][i]
        assert (h, w) == (90, 120)  # 480x640: the long side limits (120 / 640), the short side is 90 < 96
        m = len(rec["labels"])
        assert row["labels"][i, :m].tolist() == rec["labels"].tolist() and (row["labels"][i, m:] == -1).all()
        rel = row["boxes"][i, :m] / [w, h, w, h]
        assert np.allclose(rel, rec["boxes"] / [640, 480, 640, 480], atol=1e-5)  # relative position unchanged
        assert not row["img"][i, :, h:, :].any() and row["img"][i, :, :h, :w].any()  # pasted top-left
    again = DetectionBatchBuilder(records, 4, seed=0, min_size=96, max_size=120, flip=False)(3)
    assert all(np.array_equal(row[k], again[k]) for k in row)  # same step, same row
    flipping = DetectionBatchBuilder(records, 4, seed=0, min_size=96, max_size=120, flip=True)
    flipped = [flipping(s) for s in range(4)]
    seen = 0
    for s, f in enumerate(flipped):
        ref = plain(s)
        for i in range(4):
            m = int((ref["labels"][i] >= 0).sum())
            if np.array_equal(f["boxes"][i], ref["boxes"][i]):
                continue
            seen += 1
            w = ref["img_hw"][i, 1]
            mirrored = np.stack([w - ref["boxes"][i, :m, 2], ref["boxes"][i, :m, 1], w - ref["boxes"][i, :m, 0],
                                 ref["boxes"][i, :m, 3]], 1)
            assert np.allclose(f["boxes"][i, :m], mirrored, atol=1e-4)
            assert np.array_equal(f["img"][i, :, :90, :120], ref["img"][i, :, :90, ::-1][:, :, -120:])
    assert 0 < seen < 16


def test_builder_resize_rule_and_errors(bccd_catalog):
    import torch

    out, scale = resize_for_detection(torch.zeros(3, 100, 50, dtype=torch.uint8), 60, 100)
    assert tuple(out.shape) == (3, 100, 50) and scale == 1.0  # short side 50 -> 60 would make the long 120 > 100
    out, scale = resize_for_detection(torch.zeros(3, 40, 50, dtype=torch.uint8), 60, 100)
    assert tuple(out.shape) == (3, 60, 75) and scale == 1.5
    with pytest.raises(DataError) as err:
        DetectionBatchBuilder(bccd_catalog, 2, 0, max_boxes=3)
    assert re.search(r"max_boxes=3 is less than the \d+ boxes of image \d+", one_line(err))
    no_bytes = [{k: v for k, v in r.items() if k != "image"} for r in bccd_catalog]
    with pytest.raises(DataError) as err:
        DetectionBatchBuilder(no_bytes, 2, 0)
    assert "has no 'image' bytes" in one_line(err)
    assert select_classes(bccd_catalog, ["RBC", "WBC", "Platelets"], ["WBC"])[0]["labels"].tolist() == [0]
