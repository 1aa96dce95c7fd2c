"""Bad data input: prepare_data.py never removes a file it did not write, 16-bit images keep their contrast,
corrupt catalog files, empty images and one-class support sets are one-line errors, missing catalogs get the
right hint.

Everything is real: PNG files written by PIL into ``tmp_path``, Parquet files written by pyarrow, the pipeline
run as a subprocess as a user would run it (without Ray: prepare_data.py does not use it).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CONFIG, PYTHON, REPO
from PIL import Image
from test_cli_errors import assert_user_error

from fewray.apis import (
    SupportSetError,
    inference_classifier,
    init_classifier,
    load_image,
    process_support_images,
)
from fewray.data.catalog import (
    check_output_dir,
    load_split,
    read_catalog_info,
    read_labels,
    write_split,
)
from fewray.data.sources import prepare_folder
from fewray.platform.errors import DataError

SIZE = 16  # source images are SIZE x SIZE and so is the catalog: no resampling, exact values


def prepare(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``pipelines/prepare_data.py`` as a user would (it needs no Ray)."""
    return subprocess.run([PYTHON, str(REPO / "pipelines" / "prepare_data.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env={**os.environ, "RAY_ADDRESS": ""})


def error(call) -> str:
    """The message of the DataError that ``call()`` raises, checked to be one line."""
    with pytest.raises(DataError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def tree(root: Path) -> dict[str, str]:
    """``{relative path: sha256 of the bytes | 'dir'}`` of everything under ``root`` (hidden entries too)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def photos(root: Path, num_classes: int = 5, per_class: int = 2, corrupt: bool = True) -> Path:
    """``root/<class>/<n>.png``: small real RGB PNGs; with ``corrupt``, one unreadable PNG in the first class
    (a run that reads images fails on it, so an error about ``--out`` proves that none was read)."""
    rng = np.random.default_rng(0)
    for c in range(num_classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(d / f"{i}.png")
    if corrupt:
        (root / "class_0" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def gradient16(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """A 16-bit gradient over the whole 0..65535 range."""
    return np.linspace(0, 65535, height * width).round().astype(np.uint16).reshape(height, width)


# 1. prepare_data.py --out: never a file it did not write


@pytest.mark.parametrize("case", ["source_inside_out", "out_inside_source", "out_is_source", "out_not_a_catalog",
                                  "out_dotdot", "out_under_a_file", "out_is_a_file", "omniglot_out_is_source",
                                  "omniglot_out_not_a_catalog"])
def test_prepare_data_never_removes_a_file_it_did_not_write(tmp_path, case):
    work = tmp_path / "work"
    src = photos(work / "photos")
    (work / "notes.txt").write_text("my notes\n")
    other = work / "other"
    other.mkdir()
    (other / "keep.txt").write_text("keep me\n")
    (other / "train.parquet").write_bytes(b"someone else's file")
    (work / "deep").mkdir()
    dataset, cwd = "folder", REPO
    out, needle = {
        "source_inside_out": (str(work), f"output directory {work} contains the source directory {src}"),
        "out_inside_source": (str(src / "catalog"),
                              f"output directory {src / 'catalog'} is inside the source directory {src}"),
        "out_is_source": (str(src), f"output directory {src} is the source directory"),
        "out_not_a_catalog": (str(other), f"output directory {other} is not a fewray catalog (it holds keep.txt)"),
        "out_dotdot": ("..", f"output directory .. (= {work}) contains the source directory"),
        "out_under_a_file": (str(work / "notes.txt" / "sub"), f"output directory {work / 'notes.txt' / 'sub'} "
                                                              f"cannot be created: {work / 'notes.txt'} is a file"),
        "out_is_a_file": (str(work / "notes.txt"), f"output path {work / 'notes.txt'} is a file, not a directory"),
        "omniglot_out_is_source": (str(src), f"output directory {src} is the source directory"),
        "omniglot_out_not_a_catalog": (str(other), f"output directory {other} is not a fewray catalog"),
    }[case]
    if case.startswith("omniglot"):
        dataset = "omniglot"
    if case == "out_dotdot":
        cwd = work / "deep"
    before = tree(tmp_path)
    args = ["--counts", "3", "1", "1", "--image-size", str(SIZE)] if dataset == "folder" else []
    proc = prepare(dataset, "--source", str(src), "--out", out, *args, cwd=cwd)
    assert_user_error(proc, needle)
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
    assert tree(tmp_path) == before  # every file byte for byte, nothing added (no .partial-*, no .old-*)


def test_rerunning_over_a_fewray_catalog_replaces_it(tmp_path):
    src = photos(tmp_path / "photos", num_classes=6, corrupt=False)
    out = tmp_path / "catalogs" / "photos"
    (tmp_path / "catalogs" / "neighbour.txt").parent.mkdir()
    (tmp_path / "catalogs" / "neighbour.txt").write_text("untouched\n")
    prepare_folder(src, out, image_size=SIZE, counts=(3, 1, 1), seed=0)
    load_split(str(out), "test", channels=3)  # fills the decoded cache: ROOT/.decoded/ is part of a catalog
    assert list((out / ".decoded").glob("*.npy"))
    first = read_catalog_info(str(out))["classes"]
    proc = prepare("folder", "--source", str(src), "--out", str(out), "--counts", "4", "1", "1", "--seed", "3",
                   "--image-size", str(SIZE))
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = read_catalog_info(str(out))
    assert info["classes"] != first and len(info["classes"]["train"]) == 4
    assert sorted(p.name for p in out.iterdir()) == ["catalog.json", "test.parquet", "train.parquet", "val.parquet"]
    assert sorted(p.name for p in (tmp_path / "catalogs").iterdir()) == ["neighbour.txt", "photos"]  # no .old/.partial
    assert (tmp_path / "catalogs" / "neighbour.txt").read_text() == "untouched\n"
    assert len(tree(src)) == 6 + 6 * 2  # the release as it was


def test_what_counts_as_a_fewray_catalog(tmp_path):
    """Empty directories and catalogs fewray wrote may be replaced; anything else is refused, naming why."""
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty") == tmp_path / "empty"
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    cat = tmp_path / "cat"
    write_split(cat, "test", {"image": [b""], "label": [0], "class_name": ["a"]})
    assert error(lambda: check_output_dir(cat)).startswith(
        f"output directory {cat} is not a fewray catalog (it has no catalog.json): refusing to replace it")
    (cat / "catalog.json").write_text('{"splits": {}}\n')
    with pytest.raises(DataError, match="its catalog.json has no 'dataset' entry"):
        check_output_dir(cat)
    (cat / "catalog.json").write_text("{not json")
    with pytest.raises(DataError, match="its catalog.json is not valid JSON"):
        check_output_dir(cat)
    (cat / "catalog.json").write_text('{"dataset": "folder"}\n')
    (cat / ".decoded").mkdir()
    (cat / ".decoded" / "test.c3.1-2.npy").write_bytes(b"")
    assert check_output_dir(cat) == cat
    (cat / ".decoded" / "mine.txt").write_text("x")
    with pytest.raises(DataError, match=r"it holds \.decoded/\)"):
        check_output_dir(cat)
    (cat / ".decoded" / "mine.txt").unlink()
    (cat / "link.parquet").symlink_to(tmp_path / "empty")
    with pytest.raises(DataError, match=r"it holds link\.parquet\)"):
        check_output_dir(cat)


# 2. 16-bit images: scaled, not clipped


def test_16bit_png_through_the_folder_source_and_the_apis(tmp_path):
    value = gradient16()
    for c in range(5):
        (tmp_path / "src" / f"c{c}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(value).save(tmp_path / "src" / f"c{c}" / f"{i}.png")
    png = tmp_path / "src" / "c0" / "0.png"
    assert Image.open(png).mode == "I;16"  # a real 16-bit PNG
    expected = (value >> 8).astype(int)
    prepare_folder(tmp_path / "src", tmp_path / "cat", image_size=SIZE, counts=(3, 1, 1))
    images = load_split(str(tmp_path / "cat"), "train", channels=3, cache=False).images
    assert images.shape == (6, 3, SIZE, SIZE)
    assert np.abs(images.astype(int) - expected).max() <= 1  # every channel of every image
    for channels in (1, 3):
        arr = load_image(png, SIZE, channels=channels)
        assert arr.shape == (channels, SIZE, SIZE) and np.abs(arr.astype(int) - expected).max() <= 1
    # the other wide modes PIL opens, given to the API as PIL images
    for img in (Image.fromarray(value.astype(">u2")), Image.fromarray(value.astype(np.int32)),
                Image.fromarray(value.astype(np.float32))):
        assert np.abs(load_image(img, SIZE, channels=1)[0].astype(int) - expected).max() <= 1, img.mode
    small = np.arange(SIZE * SIZE, dtype=np.int32).reshape(SIZE, SIZE) % 256  # 32-bit values already in 0..255
    assert np.array_equal(load_image(Image.fromarray(small), SIZE, channels=1)[0], small)
    with pytest.raises(DataError, match="cannot convert image .* to 8 bits: its mode I values -5..-5"):
        load_image(Image.fromarray(np.full((4, 4), -5, np.int32)), SIZE)


def test_16bit_png_in_a_catalog_decodes_to_8_bits(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(gradient16()).save(buf, format="PNG")
    write_split(tmp_path, "test", {"image": [buf.getvalue()] * 2, "label": [0, 1], "class_name": ["a", "b"]})
    images = load_split(str(tmp_path), "test", channels=1, cache=False).images
    assert np.abs(images[:, 0].astype(int) - (gradient16() >> 8)).max() <= 1


# 3. corrupt catalog files


def test_corrupt_catalog_files_are_one_line_errors(tmp_path):
    root = str(tmp_path)
    path = f"{root}/test.parquet"
    (tmp_path / "test.parquet").write_bytes(b"this is not parquet")
    for read in (lambda: read_labels(root, "test"), lambda: load_split(root, "test", cache=False)):
        assert error(read).startswith(f"catalog file {path} is not a Parquet file (ArrowInvalid: Parquet magic bytes")
    pq.write_table(pa.table({"image": [b"x"], "class_name": ["a"]}), path)
    no_label = f"catalog file {path} has no column 'label' (columns: image, class_name)"
    assert error(lambda: read_labels(root, "test")) == no_label
    assert error(lambda: load_split(root, "test")) == no_label
    pq.write_table(pa.table({"image": [b"x"], "label": [0]}), path)
    no_name = f"catalog file {path} has no column 'class_name' (columns: image, label)"
    assert error(lambda: load_split(root, "test")) == no_name
    pq.write_table(pa.table({"label": [0], "class_name": ["a"]}), path)
    assert error(lambda: load_split(root, "test", cache=False)) == (
        f"catalog file {path} has no column 'image' (columns: label, class_name)")
    pq.write_table(pa.table({"image": [b"x"], "label": ["zero"], "class_name": ["a"]}), path)
    assert error(lambda: read_labels(root, "test")) == (
        f"catalog file {path}: column 'label' holds string, expected integers")
    pq.write_table(pa.table({"image": [b"x"], "label": [-1], "class_name": ["a"]}), path)
    assert error(lambda: load_split(root, "test")) == f"catalog file {path}: column 'label' has a negative label -1"
    (tmp_path / "catalog.json").write_text("{broken")
    bad_json = error(lambda: read_catalog_info(root))
    assert bad_json.startswith(f"catalog file {tmp_path / 'catalog.json'} is not valid JSON (JSONDecodeError")


def test_damaged_decoded_cache_is_decoded_again(tmp_path):
    img = Image.fromarray(np.full((8, 8), 77, np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_split(tmp_path, "test", {"image": [buf.getvalue()] * 3, "label": [0, 0, 1], "class_name": ["a", "a", "b"]})
    load_split(str(tmp_path), "test")
    (cached,) = (tmp_path / ".decoded").glob("*.npy")
    cached.write_bytes(cached.read_bytes()[:40])  # truncated
    with pytest.warns(UserWarning, match="decoded-image cache .* is unreadable"):
        images = load_split(str(tmp_path), "test").images
    assert images.shape == (3, 1, 8, 8) and (images == 77).all()


# 4. the APIs: empty images, one-class support sets


@pytest.fixture(scope="module")
def model():
    """An untrained ProtoNet of the Omniglot config (28x28 grayscale): enough to check the input checks."""
    return init_classifier(CONFIG)


def test_api_refuses_empty_images_and_one_class_support_sets(model, tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(4)]
    empty = np.zeros((0, 0), np.uint8)
    with pytest.raises(DataError, match=r"^empty image: support image 2 \(array of shape \(0, 0\)\) has size 0x0$"):
        process_support_images(model, [imgs[0], imgs[1], empty], ["a", "b", "b"])
    with pytest.raises(DataError, match=r"^empty image: support image 1 \(array of shape \(5, 0, 3\)\) has size 0x5"):
        process_support_images(model, [imgs[0], np.zeros((5, 0, 3), np.uint8)], ["a", "b"])
    with pytest.raises(SupportSetError, match=r"^support set has only 1 class \('a'\): it needs at least 2 classes"):
        process_support_images(model, imgs[:3], ["a", "a", "a"])
    with pytest.raises(DataError, match="3 images and 2 labels"):
        process_support_images(model, imgs[:3], ["a", "b"])
    with pytest.raises(ValueError, match="0 images and 0 labels"):  # a DataError that stays a ValueError
        process_support_images(model, [], [])
    assert process_support_images(model, imgs, ["a", "b", "a", "b"]) == ["a", "b"]
    with pytest.raises(DataError, match=r"^empty image: query image 1 \(PIL image of mode L and size 0x0\)"):
        inference_classifier(model, [imgs[0], Image.new("L", (0, 0))])
    with pytest.raises(DataError, match="no query images"):
        inference_classifier(model, [])
    r = inference_classifier(model, imgs[0])
    assert r["pred_class"] in ("a", "b") and abs(sum(r["scores"].values()) - 1) < 1e-5


# 5. the hint of a missing catalog names the right dataset


def test_missing_catalog_hint_names_the_dataset(tmp_path):
    root = tmp_path / "data" / "caltech101"
    assert error(lambda: read_labels(str(root), "test")) == (
        f"data directory not found: {root} (create it with: python pipelines/prepare_data.py caltech101 "
        f"--source RELEASE --out {root})")
    mini = error(lambda: load_split(str(tmp_path / "mini-imagenet"), "test"))
    assert "prepare_data.py mini_imagenet --source RELEASE" in mini
    assert "prepare_data.py omniglot --source RELEASE" in error(lambda: read_labels(str(tmp_path / "omniglot"), "train"))
    root = tmp_path / "data" / "photos"
    assert error(lambda: read_labels(str(root), "train")) == (
        f"data directory not found: {root} (create it with: python pipelines/prepare_data.py DATASET --source RELEASE "
        f"--out {root}, DATASET one of omniglot, mini_imagenet, tiered_imagenet, cub, cifar_fs, folder, caltech101, "
        f"multilabel, detection)")


def test_hint_datasets_are_those_of_prepare_data():
    """The hint's dataset list is prepare_data.py's (its --help lists the choices)."""
    proc = prepare("--help")
    assert proc.returncode == 0
    from fewray.data.sources import DETECTION_SOURCES, MULTI_LABEL_SOURCES, SOURCES

    choices = re.search(r"\{([^}]*omniglot[^}]*)\}", proc.stdout).group(1).split(",")
    assert sorted(choices) == sorted(["omniglot", *SOURCES, *MULTI_LABEL_SOURCES, *DETECTION_SOURCES])
