"""The Omniglot catalog built from the real release: Vinyals split sizes, rotations, 28x28 images."""

import json

import numpy as np
import pyarrow.parquet as pq

from fewray.data.catalog import load_split


def test_split_sizes_follow_vinyals(omniglot_catalog):
    info = json.loads((omniglot_catalog / "catalog.json").read_text())
    assert info["splits"]["train"]["characters"] + info["splits"]["val"]["characters"] == 1200
    assert info["splits"]["test"] == {"characters": 423, "classes": 1692, "images": 33840}
    assert info["splits"]["val"]["classes"] == 688


def test_test_split_is_the_standard_one(omniglot_catalog):
    table = pq.read_table(omniglot_catalog / "test.parquet", columns=["alphabet", "character", "rotation"]).to_pandas()
    chars = table.drop_duplicates(["alphabet", "character"])
    assert set(chars.alphabet) == {
        "Gurmukhi", "Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian", "Old_Church_Slavonic_(Cyrillic)",
        "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan", "ULOG",
    }
    assert sorted(chars[chars.alphabet == "Gurmukhi"].character) == [f"character{i}" for i in (42, 43, 44, 45)]
    assert sorted(table.rotation.unique()) == [0, 90, 180, 270]
    train = pq.read_table(omniglot_catalog / "train.parquet", columns=["alphabet", "character"]).to_pandas()
    assert not set(zip(train.alphabet, train.character)) & set(zip(chars.alphabet, chars.character))


def test_images_decode_and_rotations_are_classes(omniglot_catalog):
    data = load_split(str(omniglot_catalog), "val", channels=1)
    assert data.images.shape == (13760, 1, 28, 28) and data.images.dtype == np.uint8
    assert np.bincount(data.labels).tolist() == [20] * 688
    # class 4c+1 holds the 90-degree rotations of class 4c's drawings
    a = data.images[data.labels == 0][0, 0].astype(int)
    b = data.images[data.labels == 1][0, 0].astype(int)
    assert np.abs(np.rot90(a) - b).mean() < 1.0
    assert data.class_names[1].endswith("rot090")
