"""A catalog may hold only the splits a user has: ``prepare_data.py folder --counts 0 0 N``, a split file with only
``test:``; a split that is asked for but missing is a one-line error naming the splits the catalog has.

Real images: a few Caltech-101 classes, 3 JPEGs each (some grayscale), written at 32x32.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PYTHON, REPO, SHARED_DATA

from fewray.data.catalog import load_split, read_catalog_info, read_labels
from fewray.data.episodes import EpisodicSampler
from fewray.data.sources import prepare_folder
from fewray.data.sources.folder import random_class_split, split_counts
from fewray.platform.errors import DataError

CALTECH = SHARED_DATA / "caltech101" / "101_ObjectCategories"
CLASSES = ["accordion", "airplanes", "anchor", "ant", "car_side"]  # car_side: grayscale JPEGs
SIZE = 32


@pytest.fixture
def photos(tmp_path) -> Path:
    """``tmp_path/photos/<class>/``: the first 3 real JPEGs of 5 Caltech-101 classes."""
    assert CALTECH.is_dir(), f"real Caltech-101 missing in {CALTECH}"
    src = tmp_path / "photos"
    for c in CLASSES:
        (src / c).mkdir(parents=True)
        for f in sorted((CALTECH / c).glob("*.jpg"))[:3]:
            shutil.copy(f, src / c / f.name)
    return src


def prepare(*args: str) -> subprocess.CompletedProcess:
    """``pipelines/prepare_data.py ARGS`` as a user runs it (no Ray needed)."""
    return subprocess.run([PYTHON, str(REPO / "pipelines" / "prepare_data.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env={**os.environ, "RAY_AUTH_MODE": "disabled"})


def assert_test_only(out: Path, classes: list[str]) -> None:
    """``out`` holds exactly a test split of ``classes`` (3 real images each); val/train are one-line errors."""
    assert sorted(p.name for p in out.glob("*.parquet")) == ["test.parquet"]
    info = read_catalog_info(str(out))
    assert list(info["splits"]) == ["test"] and info["classes"] == {"test": sorted(classes)}
    assert info["splits"]["test"] == {"classes": len(classes), "images": 3 * len(classes),
                                      "min_images_per_class": 3, "max_images_per_class": 3}
    data = load_split(str(out), "test", channels=3, cache=False)
    assert data.images.shape == (3 * len(classes), 3, SIZE, SIZE) and data.images.std() > 10
    assert data.class_names == sorted(classes)
    EpisodicSampler(data.labels, ways=len(classes), shots=1, queries=2, seed=0, split="test").episode(0)
    for split in ("val", "train"):
        with pytest.raises(DataError, match=rf"^split '{split}' not found in catalog {out} \(splits: test\)$"):
            read_labels(str(out), split)
        with pytest.raises(DataError, match=rf"^split '{split}' not found in catalog {out} \(splits: test\)$"):
            load_split(str(out), split, channels=3)


def test_counts_0_0_n_make_a_test_only_catalog(photos, tmp_path):
    out = tmp_path / "cat"
    proc = prepare("folder", "--source", str(photos), "--out", str(out), "--counts", "0", "0", "5",
                   "--image-size", str(SIZE))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[0]) == {
        "test": {"classes": 5, "images": 15, "min_images_per_class": 3, "max_images_per_class": 3}}
    assert_test_only(out, CLASSES)
    assert "0/0/5" in read_catalog_info(str(out))["class_split"]
    # fewer test classes than the folder has: a seeded choice, the others named as unused
    info = prepare_folder(photos, tmp_path / "cat3", image_size=SIZE, counts=(0, 0, 3), seed=1)
    assert info["classes"]["test"] == random_class_split(CLASSES, 1, counts=(0, 0, 3))["test"]
    assert len(info["unused_classes"]) == 2 and list(info["splits"]) == ["test"]


def test_zero_counts_and_ratios_leave_splits_out(photos, tmp_path):
    info = prepare_folder(photos, tmp_path / "tv", image_size=SIZE, counts=(3, 0, 2), seed=0)
    assert list(info["splits"]) == ["train", "test"] and set(info["classes"]) == {"train", "test"}
    assert sorted(p.name for p in (tmp_path / "tv").glob("*.parquet")) == ["test.parquet", "train.parquet"]
    with pytest.raises(DataError, match=r"split 'val' not found in catalog .* \(splits: test, train\)"):
        load_split(str(tmp_path / "tv"), "val")
    assert split_counts(5, ratios=(0, 0, 1)) == (0, 0, 5)
    assert split_counts(10, ratios=(0.5, 0.5, 0)) == (5, 5, 0)
    assert split_counts(10, ratios=(0.6, 0.2, 0.2)) == (6, 2, 2)  # as before: train and val rounded, test the rest
    assert split_counts(100) == (64, 16, 20)
    info = prepare_folder(photos, tmp_path / "r", image_size=SIZE, ratios=(0, 0, 1))
    assert list(info["splits"]) == ["test"] and len(info["classes"]["test"]) == 5


@pytest.mark.parametrize("kind", ["yaml", "json", "txt", "dir"])
def test_a_split_file_with_only_test(photos, tmp_path, kind):
    test = ["accordion", "anchor", "car_side"]
    if kind == "yaml":
        path = tmp_path / "split.yaml"
        path.write_text("test:\n" + "".join(f"  - {c}\n" for c in test))
    elif kind == "json":
        path = tmp_path / "split.json"
        path.write_text(json.dumps({"test": test, "val": []}))  # an empty split is the same as none
    elif kind == "txt":
        path = tmp_path / "split.txt"
        path.write_text("# only a test split\n" + "".join(f"test {c}\n" for c in test))
    else:
        path = tmp_path / "splits"
        path.mkdir()
        (path / "test.txt").write_text("\n".join(test) + "\n")
    out = tmp_path / "cat"
    if kind == "yaml":  # the command line once; the other forms in-process (a process costs seconds)
        proc = prepare("folder", "--source", str(photos), "--out", str(out), "--split-file", str(path),
                       "--image-size", str(SIZE))
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        prepare_folder(photos, out, image_size=SIZE, split_file=path)
    assert_test_only(out, test)
    assert read_catalog_info(str(out))["unused_classes"] == ["airplanes", "ant"]


def test_a_split_file_with_train_and_test(photos, tmp_path):
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump({"train": ["airplanes", "ant"], "test": ["accordion", "anchor"]}))
    info = prepare_folder(photos, tmp_path / "cat", image_size=SIZE, split_file=path)
    assert list(info["splits"]) == ["train", "test"]
    assert load_split(str(tmp_path / "cat"), "train", channels=3).class_names == ["airplanes", "ant"]
    with pytest.raises(DataError, match=r"split 'val' not found in catalog .* \(splits: test, train\)"):
        read_labels(str(tmp_path / "cat"), "val")


def test_nothing_to_write_is_a_one_line_error(photos, tmp_path):
    out = tmp_path / "cat"
    cases = [
        (["--counts", "0", "0", "0"], "error: split counts must be three integers >= 0 (train val test), not all 0, "
                                      "got [0, 0, 0]"),
        (["--counts", "2", "-1", "2"], "error: split counts must be three integers >= 0 (train val test), not all 0, "
                                       "got [2, -1, 2]"),
        (["--counts", "0", "0", "6"], "error: split counts 0/0/6 need 6 classes, the folder has 5"),
        (["--ratios", "0", "0", "0"], "error: split ratios must be three numbers >= 0 (train val test), not all 0, "
                                      "got [0.0, 0.0, 0.0]"),
    ]
    empty = tmp_path / "empty.yaml"
    empty.write_text("test: []\nval: []\n")
    cases.append((["--split-file", str(empty)], f"error: split file {empty} lists no classes (expected splits "
                                                f"train, val, test with class names)"))
    nodir = tmp_path / "splits"
    nodir.mkdir()
    (nodir / "readme.md").write_text("no split files here")
    cases.append((["--split-file", str(nodir)], f"error: split directory {nodir} has none of train.txt, val.txt, "
                                                f"test.txt"))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("test: [accordion]\ntset: [ant]\n")
    cases.append((["--split-file", str(unknown)], f"error: split file {unknown}: unknown split 'tset' (splits are "
                                                  f"train, val, test)"))
    for i, (args, message) in enumerate(cases):
        if i in (0, 4):  # as the command line says it: one line, exit 2
            proc = prepare("folder", "--source", str(photos), "--out", str(out), *args)
            assert proc.returncode == 2, (args, proc.stderr[-2000:])
            assert proc.stderr.strip().splitlines() == [message], args
        else:
            kwargs = {"split_file": args[1]} if args[0] == "--split-file" else {
                args[0][2:]: [float(a) if args[0] == "--ratios" else int(a) for a in args[1:]]}
            with pytest.raises(DataError) as err:
                prepare_folder(photos, out, image_size=SIZE, **kwargs)
            assert f"error: {err.value}" == message, args
        assert not out.exists() and not list(tmp_path.glob(".cat.partial-*"))


def test_a_test_only_catalog_serves_a_meta_test(photos, tmp_path):
    """Episodes and features of a test-only catalog, as meta-test builds them (no Ray: evaluate_tasks)."""
    import torch

    from fewray.algorithms import build_classifier
    from fewray.platform.features import extract_features
    from fewray.platform.metatest import evaluate_tasks

    prepare_folder(photos, tmp_path / "cat", image_size=SIZE, counts=(0, 0, 5))
    data = load_split(str(tmp_path / "cat"), "test", channels=3)
    torch.manual_seed(0)
    model = build_classifier({"type": "ProtoNet", "backbone": {"type": "Conv4", "in_channels": 3},
                              "head": {"type": "PrototypeHead"}})
    feats = extract_features(model, data.images, batch_size=16)
    accs = evaluate_tasks(model, feats, data.labels, ways=5, shots=1, queries=2, seed=0, task_ids=range(10),
                          split="test")
    assert sorted(accs) == list(range(10)) and all(0 <= a <= 100 for a in accs.values())
    assert np.isfinite(list(accs.values())).all()
