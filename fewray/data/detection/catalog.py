"""The detection catalog: one Parquet table per split holding each image's original file bytes and its boxes.

Layout (written atomically by :func:`write_detection_catalog`, through
:func:`~fewray.data.catalog.publish_atomically`)::

    ROOT/catalog.json      {"dataset", "task": "detection", "format": "coco"|"voc", "classes", "category_ids",
                            "class_splits", "splits": {name: {"images", "boxes", "ignored", "files"}}, "source"}
    ROOT/<split>.parquet   image_id int64, file_name string, image binary (the original file, not re-encoded),
                           width, height int32, boxes list<float32> (M * 4 flat: x1, y1, x2, y2 pixels),
                           labels list<int32> (into "classes"), ignore list<bool>, ann_ids list<int64>,
                           areas list<float32>

Every image and every annotation of the source is kept (images without boxes and crowd / difficult ``ignore``
boxes too): a catalog is the data; classes, K-shot sets and the empty-image rule are chosen when it is read
(:func:`read_detection_split` gives records, :mod:`fewray.data.detection.records`).

Catalogs are made from a release by :func:`fewray.data.detection.prepare.prepare_detection`
(``prepare_data.py detection``); ``prepare_detection`` is also reachable from this module.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fewray.core.errors import DataError
from fewray.data.catalog import _split_path, publish_atomically, read_catalog_info, read_columns, write_catalog_info
from fewray.data.detection.records import make_record
from fewray.data.detection.splits import check_class_splits, resolve_classes

TASK = "detection"
#: Parquet schema of a detection split
SCHEMA = pa.schema([
    ("image_id", pa.int64()), ("file_name", pa.string()), ("image", pa.binary()), ("width", pa.int32()),
    ("height", pa.int32()), ("boxes", pa.list_(pa.float32())), ("labels", pa.list_(pa.int32())),
    ("ignore", pa.list_(pa.bool_())), ("ann_ids", pa.list_(pa.int64())), ("areas", pa.list_(pa.float32())),
])
_PREPARE = "pipelines/prepare_data.py detection --source RELEASE --out"


def _image_bytes(rec: dict[str, Any], split: str) -> bytes:
    where = f"{rec['path']} (image {rec['image_id']}, split '{split}')"
    try:
        blob = Path(rec["path"]).read_bytes()
        with Image.open(io.BytesIO(blob)) as img:
            size = img.size
    except FileNotFoundError:
        raise DataError(f"image file not found: {where}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises several types for corrupt files
        detail = " ".join(str(exc).split())[:120]
        raise DataError(f"cannot read image {where}: {type(exc).__name__}: {detail}") from None
    if size != (rec["width"], rec["height"]):
        raise DataError(f"image {where} is {size[0]}x{size[1]} pixels but its annotation says "
                        f"{rec['width']}x{rec['height']}: the boxes would not fit it")
    return blob


def write_detection_catalog(out: str | Path, splits: dict[str, list[dict[str, Any]]], classes: list[str],
                            class_splits: dict[str, list[str]] | None, category_ids: list[int] | None, source: str,
                            dataset: str | None = None, extra: dict[str, Any] | None = None,
                            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write a detection catalog (module docstring) from records, atomically.

    Args:
        out: the catalog directory (new, empty, or a catalog fewray wrote; :func:`~fewray.data.catalog.
            check_output_dir`). splits: ``{split: records}`` (records with ``path``; labels into ``classes``).
        classes: the class names. class_splits: ``{split name: [class names]}`` (checked against ``classes``;
            None: ``{"ALL_CLASSES": classes}``). category_ids: COCO category id per class (None for VOC).
        source: where the data came from (a folder, shown in ``catalog.json``). dataset: the catalog's name
            (default: ``out``'s folder name). extra: more ``catalog.json`` entries (``format``, per-split ``files``).
        progress: called with 1 after each image.

    Returns:
        The ``catalog.json`` dict.

    Raises:
        DataError: ``out`` may not be written; a class split naming a class not in ``classes``; an image file that
            is missing, unreadable, or of another size than its annotation says. Nothing is written then.

    Example::

        >>> import os, tempfile
        >>> from fewray.data.detection.voc import load_voc_records
        >>> recs = load_voc_records("../shared/data/bccd/BCCD", ["BloodImage_00000"], ["RBC", "WBC", "Platelets"])
        >>> out = os.path.join(tempfile.mkdtemp(), "bccd_det")
        >>> info = write_detection_catalog(out, {"train": recs}, ["RBC", "WBC", "Platelets"], None, None, "bccd")
        >>> info["splits"]["train"], sorted(os.listdir(out))
        ({'images': 1, 'boxes': 20, 'ignored': 0}, ['catalog.json', 'train.parquet'])
    """
    class_splits = check_class_splits(class_splits) if class_splits else {"ALL_CLASSES": list(classes)}
    for name in class_splits:
        resolve_classes(name, list(classes), class_splits, source)
    info: dict[str, Any] = {"dataset": dataset or Path(out).expanduser().resolve().name, "task": TASK,
                            **{k: v for k, v in (extra or {}).items() if k != "splits"},
                            "classes": list(classes), "category_ids": list(category_ids) if category_ids else None,
                            "class_splits": class_splits, "splits": {}, "source": str(source)}
    with publish_atomically(out) as tmp:
        for split, records in splits.items():
            cols: dict[str, list] = {name: [] for name in SCHEMA.names}
            for rec in records:
                cols["image"].append(_image_bytes(rec, split))
                for name in ("image_id", "file_name", "width", "height"):
                    cols[name].append(rec[name])
                for name in ("boxes", "labels", "ignore", "ann_ids", "areas"):
                    cols[name].append(np.asarray(rec[name]).reshape(-1))
                if progress:
                    progress(1)
            pq.write_table(pa.table(cols, schema=SCHEMA), Path(tmp) / f"{split}.parquet", row_group_size=1024)
            ignored = int(sum(int(r["ignore"].sum()) for r in records))
            info["splits"][split] = {"images": len(records), "boxes": int(sum(len(r["labels"]) for r in records)),
                                     "ignored": ignored, **((extra or {}).get("splits", {}).get(split, {}))}
        write_catalog_info(tmp, info)
    return info


def check_detection_catalog(root: str) -> dict[str, Any]:
    """``catalog.json`` of a detection catalog (a remote ``s3://`` one is not checked: ``{}``).

    Raises:
        DataError: a missing directory (with the command that makes it) or ``catalog.json``; ``ROOT is a few-shot
            classification catalog, not a detection catalog (catalog.json task ...)``; the same for a multi-label
            catalog.

    Example::

        >>> check_detection_catalog("no/such/catalog")
        Traceback (most recent call last):
        fewray.core.errors.DataError: data directory not found: no/such/catalog (create it with: python pipelines/prepare_data.py detection --source RELEASE --out no/such/catalog)
    """
    if "://" in str(root):
        return {}
    if not Path(root).is_dir():
        raise DataError(f"data directory not found: {root} (create it with: python {_PREPARE} {root})")
    info = read_catalog_info(str(root))
    if not info:
        raise DataError(f"{root} has no catalog.json: it is not a detection catalog; make one with "
                        f"python {_PREPARE} DIR")
    if info.get("task") != TASK:
        kind = {"multi_label": "a multi-label catalog"}.get(info.get("task"), "a few-shot classification catalog")
        task = f"task: {info['task']}" if "task" in info else "task: none, one class per image"
        raise DataError(f"{root} is {kind}, not a detection catalog (catalog.json {task}); make one with "
                        f"python {_PREPARE} DIR")
    return info


def read_detection_split(root: str, split: str, images: bool = True) -> list[dict[str, Any]]:
    """The records of a catalog split, with the image file's bytes as ``image`` (instead of ``path``).

    Args:
        root: the catalog directory (or URI). split: ``train``, ``val``, ``test``... images: read the image bytes
            (default True; False for a cheap look at the boxes).

    Returns:
        Records (:mod:`fewray.data.detection.records`; ``boxes`` ``(M, 4)`` float32 ...), in the stored order.

    Raises:
        DataError: not a detection catalog (:func:`check_detection_catalog`); ``split 'val' not found in catalog
            ROOT (splits: ...)``; a file that is not Parquet or lacks a column.

    Example::

        >>> read_detection_split("no/such/catalog", "train")
        Traceback (most recent call last):
        fewray.core.errors.DataError: data directory not found: no/such/catalog (create it with: python pipelines/prepare_data.py detection --source RELEASE --out no/such/catalog)
    """
    check_detection_catalog(root)
    path = _split_path(str(root), split)
    names = [n for n in SCHEMA.names if images or n != "image"]
    table = read_columns(path, names)
    cols = {n: table.column(n).combine_chunks() for n in names}
    flat = {}
    for n in ("boxes", "labels", "ignore", "ann_ids", "areas"):
        arr = cols[n]
        flat[n] = (arr.offsets.to_numpy(), arr.values.to_numpy(zero_copy_only=False))
    scalars = {n: cols[n].to_pylist() for n in ("image_id", "file_name", "width", "height")}
    blobs = cols["image"].to_pylist() if images else None
    out = []
    for i in range(len(table)):
        parts = {n: v[o[i]:o[i + 1]] for n, (o, v) in flat.items()}
        rec = make_record(scalars["image_id"][i], scalars["file_name"][i], "", scalars["width"][i],
                          scalars["height"][i], parts["boxes"], parts["labels"], parts["ignore"], parts["ann_ids"],
                          parts["areas"])
        del rec["path"]
        if blobs is not None:
            rec["image"] = blobs[i]
        out.append(rec)
    return out


def __getattr__(name: str) -> Any:
    """``prepare_detection`` lives in :mod:`fewray.data.detection.prepare` (it imports this module); reachable here."""
    if name == "prepare_detection":
        from fewray.data.detection.prepare import prepare_detection

        return prepare_detection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
