"""Omniglot (Lake et al., Science 2015) from its original release, as a Parquet catalog.

Reads ``images_background.zip`` and ``images_evaluation.zip`` (each
``images_*/<Alphabet>/characterNN/XXXX_YY.png``, 105x105, 20 drawings per character)
and writes the protocol of Vinyals et al. (2016), as used by Snell et al. (2017):

- the 1623 characters ordered background then evaluation, by alphabet, then character;
- the first 1200 characters are meta-training, the last 423 meta-test (this is exactly the
  standard "Vinyals" test split: the last 423 characters of the evaluation alphabets);
- the last 172 of the 1200 form the meta-validation split, the first 1028 the training
  split (the split sizes of Snell et al.);
- every character is rotated by 0, 90, 180 and 270 degrees into 4 classes
  (train 4112, val 688, test 1692 classes; 20 images each);
- images are resized to 28x28 grayscale (antialiased) and stored as PNG.
"""

from __future__ import annotations

import re
import urllib.request
import zipfile
from collections import defaultdict
from pathlib import Path

from PIL import Image

from fewray.data.catalog import (
    check_output_dir,
    encode_png,
    publish_atomically,
    to_8bit,
    write_catalog_info,
    write_split,
)
from fewray.core.errors import DataError

RELEASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}"
ZIPS = ("images_background.zip", "images_evaluation.zip")
NUM_TRAINVAL_CHARACTERS = 1200
NUM_VAL_CHARACTERS = 172
ROTATIONS = (0, 90, 180, 270)
_PNG = re.compile(r"^images_(background|evaluation)/([^/]+)/(character\d+)/([^/]+\.png)$")
_CHARACTER_DIR = re.compile(r"^images_(background|evaluation)/([^/]+)/(character\d+)/")


def download(source: Path) -> None:
    """Download the two release zips of Omniglot into ``source`` (needs internet)."""
    source.mkdir(parents=True, exist_ok=True)
    for name in ZIPS:
        if not (source / name).is_file():
            urllib.request.urlretrieve(RELEASE_URL.format(name=name), source / name)


def _characters(source: Path) -> dict[tuple[str, str, str], list[tuple[zipfile.ZipFile, str]]]:
    chars: dict[tuple[str, str, str], list] = defaultdict(list)
    for name in ZIPS:
        path = source / name
        if not path.is_file():
            raise DataError(f"Omniglot release file not found: {path} (expected {' and '.join(ZIPS)})")
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise DataError(f"not a zip file: {path}") from None
        for member in zf.namelist():
            m = _PNG.match(member)
            if m:
                chars[(m.group(1), m.group(2), m.group(3))].append((zf, member))
            elif d := _CHARACTER_DIR.match(member):
                chars.setdefault((d.group(1), d.group(2), d.group(3)), [])  # a folder entry: must hold PNGs
    empty = sorted(f"{a}/{c}" for (_, a, c), members in chars.items() if not members)
    if empty:
        raise DataError(f"empty class in the Omniglot release: {empty[0]} has no PNG images"
                        + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""))
    return chars


def character_splits(keys: list[tuple[str, str, str]]) -> dict[str, list[tuple[str, str, str]]]:
    """Assign ``(set, alphabet, character)`` keys to train/val/test by the documented protocol."""
    order = sorted(keys, key=lambda k: (k[0] != "background", k[1], k[2]))
    trainval, test = order[:NUM_TRAINVAL_CHARACTERS], order[NUM_TRAINVAL_CHARACTERS:]
    n_train = len(trainval) - NUM_VAL_CHARACTERS
    return {"train": trainval[:n_train], "val": trainval[n_train:], "test": test}


def prepare_omniglot(source: str | Path, out: str | Path, image_size: int = 28, progress=None) -> dict:
    """Convert the Omniglot release zips in ``source`` into a Parquet catalog in ``out``.

    Args:
        source: directory holding ``images_background.zip`` and ``images_evaluation.zip``.
        out: catalog directory to write.
        image_size: output side in pixels (28 in the standard protocol).
        progress: optional callable ``progress(n)`` called after each character.

    Returns:
        The catalog info written to ``out/catalog.json`` (per-split class and image counts).

    The catalog is written to a temporary directory beside ``out`` and moved into place only when
    complete, so a failure never leaves a half-written catalog or damages an existing one; ``out`` is
    checked first (:func:`~fewray.data.catalog.check_output_dir`): only a new path, an empty
    directory or a catalog fewray wrote may be written, never ``source`` or a directory around or inside it.

    Raises:
        DataError: an ``out`` that may not be written (see above), a missing zip, a corrupt zip or image,
            an empty character folder, or a release with too few characters.
    """
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DataError(f"Omniglot source directory not found: {source}")
    if image_size < 8:
        raise DataError(f"image size {image_size} is too small (at least 8 pixels)")
    check_output_dir(out, (source,))
    with publish_atomically(out) as tmp:
        return _write_catalog(source, tmp, image_size, progress)


def _write_catalog(source: Path, out: Path, image_size: int, progress) -> dict:
    chars = _characters(source)
    if len(chars) <= NUM_TRAINVAL_CHARACTERS:
        raise DataError(f"{source}: found {len(chars)} characters, the protocol needs more than {NUM_TRAINVAL_CHARACTERS}")
    info = {
        "dataset": "omniglot",
        "image_size": image_size,
        "channels": 1,
        "protocol": "Vinyals et al. 2016: 1028 train / 172 val / 423 test characters x 4 rotations",
        "splits": {},
    }
    for split, keys in character_splits(list(chars)).items():
        cols: dict[str, list] = {k: [] for k in ("image", "label", "class_name", "alphabet", "character", "rotation")}
        for ci, key in enumerate(keys):
            _, alphabet, character = key
            for zf, member in sorted(chars[key], key=lambda t: t[1]):
                try:
                    with zf.open(member) as fh:
                        img = to_8bit(Image.open(fh), f"{member} in {zf.filename}").convert("L")
                    img = img.resize((image_size, image_size), Image.LANCZOS)
                except DataError:
                    raise
                except Exception as exc:
                    raise DataError(f"cannot read image {member} in {zf.filename}: {exc}") from None
                for ri, rot in enumerate(ROTATIONS):
                    cols["image"].append(encode_png(img.rotate(rot) if rot else img))
                    cols["label"].append(4 * ci + ri)
                    cols["class_name"].append(f"{alphabet}/{character}/rot{rot:03d}")
                    cols["alphabet"].append(alphabet)
                    cols["character"].append(character)
                    cols["rotation"].append(rot)
            if progress:
                progress(1)
        write_split(out, split, cols)
        info["splits"][split] = {"characters": len(keys), "classes": 4 * len(keys), "images": len(cols["label"])}
    write_catalog_info(out, info)
    return info
