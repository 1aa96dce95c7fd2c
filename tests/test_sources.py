"""Dataset sources: each loader on a tiny fixture in its official layout, built from real Caltech-101 images.

Fixtures are built in ``tmp_path`` from ``../shared/data/caltech101/101_ObjectCategories`` (a few classes x a few
real JPEGs, some grayscale); the pickled releases (tiered-ImageNet, CIFAR-100) are written by the test from
the same images, resized. Output images are 32x32 (84x84 for mini-ImageNet) to keep the tests fast.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SHARED_DATA, run_pipeline
from PIL import Image
from test_cli_errors import assert_user_error

from fewray.data.catalog import load_split, read_catalog_info
from fewray.data.sources import (
    prepare_cifar_fs,
    prepare_cub,
    prepare_folder,
    prepare_mini_imagenet,
    prepare_tiered_imagenet,
)
from fewray.data.sources.caltech101 import EXCLUDED, SPLIT_COUNTS, SPLIT_SEED
from fewray.data.sources.folder import random_class_split
from fewray.platform.errors import DataError

CALTECH = SHARED_DATA / "caltech101" / "101_ObjectCategories"
# car_side holds grayscale JPEGs: they must come out RGB
CLASSES = ["accordion", "airplanes", "car_side", "anchor", "ant", "barrel", "bass", "beaver", "binocular", "bonsai",
           "brain", "ceiling_fan"]
#: the documented test classes of the Caltech-101 split (README "Datasets")
CALTECH_TEST_CLASSES = [
    "barrel", "buddha", "cup", "dollar_bill", "dolphin", "dragonfly", "ewer", "flamingo_head", "hawksbill", "hedgehog",
    "ketch", "laptop", "lobster", "lotus", "metronome", "panda", "pyramid", "rooster", "saxophone", "schooner",
    "scissors", "strawberry", "sunflower", "wheelchair", "wild_cat",
]


def real_images(num_classes: int, per_class: int) -> dict[str, list[Path]]:
    """``{class: [jpg, ...]}``: the first ``per_class`` real Caltech-101 images of ``num_classes`` classes."""
    assert CALTECH.is_dir(), f"real Caltech-101 missing in {CALTECH}"
    return {c: sorted((CALTECH / c).glob("*.jpg"))[:per_class] for c in CLASSES[:num_classes]}


def small_rgb(path: Path, size: int) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR))


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def check_catalog(out: Path, expected: dict[str, tuple[int, int]], size: int) -> dict:
    """Per split: (classes, images) as expected, labels 0..C-1, images (N, 3, size, size) after load_split."""
    info = read_catalog_info(str(out))
    assert info["image_size"] == size and info["channels"] == 3
    for split, (n_classes, n_images) in expected.items():
        assert (info["splits"][split]["classes"], info["splits"][split]["images"]) == (n_classes, n_images), split
        data = load_split(str(out), split, channels=3, cache=False)
        assert data.images.shape == (n_images, 3, size, size) and data.images.dtype == np.uint8
        assert sorted(set(data.labels.tolist())) == list(range(n_classes))
        assert len(data.class_names) == n_classes and all(data.class_names)
        assert data.images.std() > 10  # real pictures, not blank
    return info


def corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])  # a truncated JPEG/PNG


# --------------------------------------------------------------------------- folder


def folder_fixture(root: Path, num_classes: int = 10, per_class: int = 5) -> Path:
    src = root / "photos"
    for c, files in real_images(num_classes, per_class).items():
        (src / c).mkdir(parents=True)
        for f in files:
            shutil.copy(f, src / c / f.name)
    (src / "accordion" / "notes.txt").write_text("not an image, ignored")
    return src


def test_folder_random_split(tmp_path):
    src = folder_fixture(tmp_path)
    assert Image.open(next((src / "car_side").glob("*.jpg"))).mode == "L"  # a grayscale JPEG, must come out RGB
    info = prepare_folder(src, tmp_path / "cat", image_size=32, counts=(6, 2, 2), seed=3)
    check_catalog(tmp_path / "cat", {"train": (6, 30), "val": (2, 10), "test": (2, 10)}, 32)
    assert info["classes"] == random_class_split(CLASSES[:10], 3, counts=(6, 2, 2))
    assert sorted(c for names in info["classes"].values() for c in names) == sorted(CLASSES[:10])
    # labels follow the sorted class names of each split
    table = pq.read_table(tmp_path / "cat" / "train.parquet").to_pydict()
    assert table["class_name"][0] == info["classes"]["train"][0] and table["label"][0] == 0
    assert table["filename"][0].startswith(info["classes"]["train"][0] + "/")
    # ratios: 10 classes x (0.6, 0.2, 0.2) -> 6 / 2 / 2; a different seed gives another split
    info2 = prepare_folder(src, tmp_path / "cat2", image_size=32, ratios=(0.6, 0.2, 0.2), seed=4)
    assert [len(info2["classes"][s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert info2["classes"] != info["classes"]


@pytest.mark.parametrize("kind", ["yaml", "json", "txt", "dir"])
def test_folder_split_file(tmp_path, kind):
    src = folder_fixture(tmp_path, num_classes=6, per_class=3)
    split = {"train": ["accordion", "airplanes", "anchor"], "val": ["ant"], "test": ["barrel", "car_side"]}
    if kind == "yaml":
        path = tmp_path / "split.yaml"
        path.write_text(yaml.safe_dump(split))
    elif kind == "json":
        path = tmp_path / "split.json"
        path.write_text(json.dumps(split))
    elif kind == "txt":
        path = tmp_path / "split.txt"
        path.write_text("".join(f"{s} {c}\n" for s, cs in split.items() for c in cs))
    else:
        path = tmp_path / "splits"
        path.mkdir()
        for s, cs in split.items():
            (path / f"{s}.txt").write_text("\n".join(cs) + "\n")
    info = prepare_folder(src, tmp_path / "cat", image_size=32, split_file=path)
    check_catalog(tmp_path / "cat", {"train": (3, 9), "val": (1, 3), "test": (2, 6)}, 32)
    assert info["classes"] == split


def test_folder_center_crop_and_jpeg(tmp_path):
    src = folder_fixture(tmp_path, num_classes=3, per_class=2)
    info = prepare_folder(src, tmp_path / "cat", image_size=32, counts=(1, 1, 1), resize_mode="center_crop",
                          image_format="jpeg")
    assert info["resize_mode"] == "center_crop" and info["image_format"] == "jpeg"
    blob = pq.read_table(tmp_path / "cat" / "train.parquet").column("image")[0].as_py()
    assert blob[:2] == b"\xff\xd8"  # JPEG
    check_catalog(tmp_path / "cat", {"train": (1, 2)}, 32)


def test_folder_errors(tmp_path):
    src = folder_fixture(tmp_path, num_classes=4, per_class=3)
    out = tmp_path / "cat"
    with pytest.raises(DataError, match="image folder source directory not found: .*nowhere"):
        prepare_folder(tmp_path / "nowhere", out)
    bad_split = tmp_path / "split.yaml"
    bad_split.write_text(yaml.safe_dump({"train": ["accordion", "zebra"], "val": ["car_side"], "test": ["anchor"]}))
    with pytest.raises(DataError, match="unknown class 'zebra' in split 'train' of split file"):
        prepare_folder(src, out, image_size=32, split_file=bad_split)
    with pytest.raises(DataError, match="split file not found"):
        prepare_folder(src, out, image_size=32, split_file=tmp_path / "missing.yaml")
    with pytest.raises(DataError, match="need 5 classes, the folder has 4"):
        prepare_folder(src, out, image_size=32, counts=(3, 1, 1))
    victim = sorted((src / "anchor").glob("*.jpg"))[1]
    corrupt(victim)
    with pytest.raises(DataError, match=f"cannot read image {victim}"):
        prepare_folder(src, out, image_size=32, counts=(2, 1, 1))
    (src / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty class folder: .*empty_class"):
        prepare_folder(src, out, image_size=32, counts=(2, 1, 1))
    assert not out.exists() and not list(tmp_path.glob(".cat.partial-*"))  # nothing half-written


@pytest.mark.slow  # a prepare_data.py subprocess: 14 s
def test_folder_cli(tmp_path):
    src = folder_fixture(tmp_path, num_classes=5, per_class=3)
    proc = run_pipeline("prepare_data.py", "folder", "--source", str(src), "--out", str(tmp_path / "cat"),
                        "--image-size", "32", "--counts", "3", "1", "1", "--seed", "1", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[0])["train"]["classes"] == 3
    check_catalog(tmp_path / "cat", {"train": (3, 9), "val": (1, 3), "test": (1, 3)}, 32)


def test_folder_cli_error(tmp_path):
    src = folder_fixture(tmp_path, num_classes=3, per_class=2)
    (src / "nothing_here").mkdir()
    proc = run_pipeline("prepare_data.py", "folder", "--source", str(src), "--out", str(tmp_path / "cat"),
                        "--counts", "1", "1", "1", timeout=120)
    assert_user_error(proc, "empty class folder")
    assert not (tmp_path / "cat").exists()


def test_caltech101_split_is_the_documented_one():
    names = sorted(p.name for p in CALTECH.iterdir() if p.is_dir() and p.name not in EXCLUDED)
    assert len(names) == 100 and "Faces" in names and "Faces_easy" not in names
    split = random_class_split(names, SPLIT_SEED, counts=SPLIT_COUNTS)
    assert [len(split[s]) for s in ("train", "val", "test")] == [60, 15, 25]
    assert split["test"] == CALTECH_TEST_CLASSES


# --------------------------------------------------------------------------- mini-ImageNet


def mini_fixture(root: Path) -> Path:
    src = root / "mini"
    (src / "images").mkdir(parents=True)
    wnids = {c: f"n{i:08d}" for i, c in enumerate(CLASSES[:8])}
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, (c, files) in enumerate(real_images(8, 4).items()):
        split = "train" if i < 4 else ("val" if i < 6 else "test")
        for j, f in enumerate(files):
            name = f"{wnids[c]}{j + 1:08d}.jpg"
            shutil.copy(f, src / "images" / name)
            rows[split].append(f"{name},{wnids[c]}")
    for split, lines in rows.items():
        (src / f"{split}.csv").write_text("filename,label\n" + "\n".join(lines) + "\n")
    return src


def test_mini_imagenet(tmp_path):
    src = mini_fixture(tmp_path)
    info = prepare_mini_imagenet(src, tmp_path / "cat", image_size=84)
    check_catalog(tmp_path / "cat", {"train": (4, 16), "val": (2, 8), "test": (2, 8)}, 84)
    assert info["dataset"] == "mini_imagenet"
    names = load_split(str(tmp_path / "cat"), "val", channels=3).class_names
    assert names == ["n00000004", "n00000005"]


def test_mini_imagenet_errors(tmp_path):
    src = mini_fixture(tmp_path)
    out = tmp_path / "cat"
    with pytest.raises(DataError, match="mini-ImageNet source directory not found"):
        prepare_mini_imagenet(tmp_path / "nowhere", out)
    (src / "test.csv").rename(tmp_path / "test.csv")
    with pytest.raises(DataError, match=f"mini-ImageNet split file not found: {src / 'test.csv'}"):
        prepare_mini_imagenet(src, out)
    (tmp_path / "test.csv").rename(src / "test.csv")
    victim = src / "images" / "n0000000600000002.jpg"
    victim.unlink()
    with pytest.raises(DataError, match=f"image file not found: {victim}"):
        prepare_mini_imagenet(src, out, image_size=32)
    shutil.copy(src / "images" / "n0000000600000001.jpg", victim)
    corrupt(victim)
    with pytest.raises(DataError, match=f"cannot read image {victim}"):
        prepare_mini_imagenet(src, out, image_size=32)
    # a class in two split files
    with open(src / "val.csv", "a") as fh:
        fh.write("n0000000000000001.jpg,n00000000\n")
    with pytest.raises(DataError, match="class 'n00000000' is in both split 'train' and split 'val'"):
        prepare_mini_imagenet(src, out, image_size=32)
    assert not out.exists()


# --------------------------------------------------------------------------- tiered-ImageNet


def tiered_fixture(root: Path) -> Path:
    """Pickles as in Ren et al.'s release: a list of PNG byte arrays and a labels dict per split."""
    src = root / "tiered"
    src.mkdir()
    imgs = real_images(9, 3)
    plan = {"train": CLASSES[:5], "val": CLASSES[5:7], "test": CLASSES[7:9]}
    general = {"train": ["instrument", "vehicle"], "val": ["animal"], "test": ["thing"]}
    for split, classes in plan.items():
        blobs, specific, gen = [], [], []
        for ci, c in enumerate(classes):
            for f in imgs[c]:
                blobs.append(np.frombuffer(png_bytes(small_rgb(f, 84)), dtype=np.uint8))
                specific.append(ci)
                gen.append(ci % len(general[split]))
        order = np.random.default_rng(0).permutation(len(blobs))  # the release is not sorted by class
        labels = {"label_specific": np.array(specific)[order], "label_general": np.array(gen)[order],
                  "label_specific_str": [f"n0{i}_{c}" for i, c in enumerate(classes)],
                  "label_general_str": general[split]}
        with open(src / f"{split}_images_png.pkl", "wb") as fh:
            pickle.dump([blobs[i] for i in order], fh, protocol=2)
        with open(src / f"{split}_labels.pkl", "wb") as fh:
            pickle.dump(labels, fh, protocol=2)
    return src


def test_tiered_imagenet(tmp_path):
    src = tiered_fixture(tmp_path)
    prepare_tiered_imagenet(src, tmp_path / "cat", image_size=32)
    check_catalog(tmp_path / "cat", {"train": (5, 15), "val": (2, 6), "test": (2, 6)}, 32)
    table = pq.read_table(tmp_path / "cat" / "train.parquet").to_pydict()
    assert set(table["class_general"]) == {"instrument", "vehicle"}
    assert table["class_name"][0] == "n00_accordion"


def test_tiered_imagenet_errors(tmp_path):
    src = tiered_fixture(tmp_path)
    out = tmp_path / "cat"
    (src / "val_labels.pkl").unlink()
    with pytest.raises(DataError, match=f"pickle file not found: {src / 'val_labels.pkl'}"):
        prepare_tiered_imagenet(src, out)
    # a pickle that would run code is refused (and the code does not run)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with open(src / "val_labels.pkl", "wb") as fh:
        pickle.dump({"label_specific": Evil()}, fh)
    with pytest.raises(DataError, match="refusing to load pathlib"):
        prepare_tiered_imagenet(src, out)
    assert not marker.exists()
    # a corrupt PNG inside the images pickle, named by its position
    with open(src / "val_labels.pkl", "wb") as fh:
        pickle.dump({"label_specific": np.array([0, 0, 1]), "label_specific_str": ["a", "b", "c"]}, fh)
    with open(src / "val_images_png.pkl", "wb") as fh:
        good = png_bytes(small_rgb(real_images(1, 1)["accordion"][0], 32))
        pickle.dump([np.frombuffer(good, np.uint8), np.frombuffer(good[:60], np.uint8), np.frombuffer(good, np.uint8)], fh)
    with pytest.raises(DataError, match="empty class 'c'"):  # label_specific_str names a class with no images
        prepare_tiered_imagenet(src, out)
    with open(src / "val_labels.pkl", "wb") as fh:
        pickle.dump({"label_specific": np.array([0, 0, 1]), "label_specific_str": ["a", "b"]}, fh)
    with pytest.raises(DataError, match=r"cannot read image val_images_png.pkl\[1\]"):
        prepare_tiered_imagenet(src, out)
    with open(src / "val_labels.pkl", "wb") as fh:
        pickle.dump({"label_specific": np.array([0, 0, 5]), "label_specific_str": ["a", "b"]}, fh)
    with pytest.raises(DataError, match="unknown class 5 in"):
        prepare_tiered_imagenet(src, out)
    assert not out.exists()


# --------------------------------------------------------------------------- CUB-200-2011


def cub_fixture(root: Path, num_classes: int = 8) -> Path:
    base = root / "CUB" / "CUB_200_2011"
    classes = [f"{i + 1:03d}.{c.capitalize()}" for i, c in enumerate(CLASSES[:num_classes])]
    images, labels = [], []
    for i, (c, files) in enumerate(zip(classes, real_images(num_classes, 3).values())):
        (base / "images" / c).mkdir(parents=True)
        for f in files:
            shutil.copy(f, base / "images" / c / f.name)
            images.append(f"{c}/{f.name}")
            labels.append(i + 1)
    (base / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    (base / "images.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(images)))
    (base / "image_class_labels.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(labels)))
    return root / "CUB"


def test_cub_closerlook_split(tmp_path):
    src = cub_fixture(tmp_path)
    prepare_cub(src, tmp_path / "cat", image_size=32)
    check_catalog(tmp_path / "cat", {"train": (4, 12), "val": (2, 6), "test": (2, 6)}, 32)
    names = {s: load_split(str(tmp_path / "cat"), s, channels=3).class_names for s in ("train", "val", "test")}
    # index i (0-based, classes.txt order): i%2==0 train, i%4==1 val, i%4==3 test
    assert [n[:3] for n in names["train"]] == ["001", "003", "005", "007"]
    assert [n[:3] for n in names["val"]] == ["002", "006"]
    assert [n[:3] for n in names["test"]] == ["004", "008"]


def test_cub_errors(tmp_path):
    src = cub_fixture(tmp_path, num_classes=4)
    base, out = src / "CUB_200_2011", tmp_path / "cat"
    with pytest.raises(DataError, match="CUB-200-2011 source directory not found"):
        prepare_cub(tmp_path / "nowhere", out)
    labels = (base / "image_class_labels.txt").read_text()
    (base / "image_class_labels.txt").write_text(labels + "13 9\n")
    with pytest.raises(DataError, match="unknown class id 9 of image 13"):
        prepare_cub(src, out, image_size=32)
    (base / "image_class_labels.txt").write_text(labels)
    first = base / "images" / (base / "images.txt").read_text().split()[1]
    corrupt(first)
    with pytest.raises(DataError, match=f"cannot read image {first}"):
        prepare_cub(src, out, image_size=32)
    (base / "images.txt").unlink()
    with pytest.raises(DataError, match=f"CUB-200-2011 file not found: {base / 'images.txt'}"):
        prepare_cub(src, out, image_size=32)
    assert not out.exists()


# --------------------------------------------------------------------------- CIFAR-FS


def cifar_fixture(root: Path) -> Path:
    """CIFAR-100 python pickles (as Python 2 wrote them: bytes keys) from real images at 32x32."""
    src = root / "cifar"
    (src / "cifar-100-python").mkdir(parents=True)
    names = CLASSES[:10]
    imgs = real_images(10, 4)
    for part, sl in (("train", slice(0, 3)), ("test", slice(3, 4))):
        rows, labels = [], []
        for ci, c in enumerate(names):
            for f in imgs[c][sl]:
                rows.append(small_rgb(f, 32).transpose(2, 0, 1).reshape(-1))
                labels.append(ci)
        d = {b"data": np.stack(rows).astype(np.uint8), b"fine_labels": labels, b"coarse_labels": [0] * len(labels),
             b"filenames": [b"x.png"] * len(labels)}
        with open(src / "cifar-100-python" / part, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
    with open(src / "cifar-100-python" / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": [b"all"]}, fh, protocol=2)
    sdir = src / "splits" / "bertinetto"
    sdir.mkdir(parents=True)
    for split, cs in (("train", names[:6]), ("val", names[6:8]), ("test", names[8:])):
        (sdir / f"{split}.txt").write_text("\n".join(cs) + "\n")
    return src


def test_cifar_fs(tmp_path):
    src = cifar_fixture(tmp_path)
    prepare_cifar_fs(src, tmp_path / "cat")
    check_catalog(tmp_path / "cat", {"train": (6, 24), "val": (2, 8), "test": (2, 8)}, 32)
    data = load_split(str(tmp_path / "cat"), "test", channels=3)
    assert data.class_names == ["binocular", "bonsai"]
    # pixels survive unchanged at the native 32x32 (PNG is lossless): first test-split image = binocular #1
    expected = small_rgb(real_images(10, 1)["binocular"][0], 32).transpose(2, 0, 1)
    np.testing.assert_array_equal(data.images[0], expected)


def test_cifar_fs_errors(tmp_path):
    src = cifar_fixture(tmp_path)
    out = tmp_path / "cat"
    with (src / "splits" / "bertinetto" / "val.txt").open("a") as fh:
        fh.write("unicorn\n")
    with pytest.raises(DataError, match="unknown class 'unicorn' in split 'val' of the split files"):
        prepare_cifar_fs(src, out)
    (src / "splits" / "bertinetto" / "val.txt").write_text("accordion\n")  # accordion is also in train
    with pytest.raises(DataError, match="class 'accordion' is in both split 'train' and split 'val'"):
        prepare_cifar_fs(src, out)
    (src / "cifar-100-python" / "test").write_bytes(b"\x80\x02}q\x00")  # truncated pickle
    (src / "splits" / "bertinetto" / "val.txt").write_text("bass\nbeaver\n")
    with pytest.raises(DataError, match="cannot load pickle .*cifar-100-python/test"):
        prepare_cifar_fs(src, out)
    shutil.rmtree(src / "cifar-100-python")
    with pytest.raises(DataError, match="CIFAR-100 python directory not found"):
        prepare_cifar_fs(src, out)
    assert not out.exists()
