"""A detection catalog from a release: COCO JSON files, Roboflow folders or VOC image sets -> the Parquet catalog of
:mod:`fewray.data.detection.catalog` (``prepare_data.py detection``).

**Split files** (``prepare_data.py detection --split-file``; the multi-label syntax of
``configs/multi_label/coco_split.yaml``, :func:`fewray.data.sources.multilabel.split_entries`): per split a list
of COCO JSON files, Roboflow folders (``aquarium/train``) or VOC image sets (``bccd/BCCD/ImageSets/Main/train.txt``),
each optionally ``{file: F, part: k/n}`` (the k-th of n contiguous parts of its images sorted by image id), paths
relative to ``SOURCE``; optional keys ``dataset`` (the catalog's name) and ``class_splits`` (``coco``, ``voc1``,
``voc2``, ``voc3``, or a mapping of split names to class names). An image in ``train`` and in another split is an
error (a test on training images); ``val`` and ``test`` may share images. Without a split file the release's own
splits are used (:func:`fewray.data.sources.multilabel.find_annotations`: a Roboflow export's
``train``/``valid``/``test``, a COCO folder's ``instances_*.json``, a VOC root's ``train``/``val``/``test`` sets).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fewray.core.errors import DataError
from fewray.data.catalog import check_output_dir
from fewray.data.detection.catalog import write_detection_catalog
from fewray.data.detection.coco import coco_annotation_file, coco_file_records, merge_records, read_coco_categories
from fewray.data.detection.splits import NAMED_CLASS_SPLITS, check_class_splits
from fewray.data.detection.voc import load_voc_records, voc_object_names
from fewray.data.sources.multilabel import ROBOFLOW_FILE, Part, _voc_ids, find_annotations, split_entries


def read_detection_split_file(path: str | Path) -> tuple[dict[str, list[tuple[str, Part | None]]], str | None, Any]:
    """A detection split file (module docstring): ``(split entries, dataset or None, class_splits or None)``.

    Raises:
        DataError: a missing or unparsable file, a top level that is not a mapping, a bad ``dataset``, or
            :func:`~fewray.data.sources.multilabel.split_entries`' errors (naming the file).

    Example::

        >>> entries, name, class_splits = read_detection_split_file("configs/detection/coco_split.yaml")
        >>> name, class_splits, sorted(entries), len(entries["train"])
        ('coco_fsdet', 'coco', ['test', 'train', 'val'], 2)
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    raw = _read_yaml(path, "split file")
    if not isinstance(raw, dict):
        raise DataError(f"split file {path}: expected a mapping of split name to annotation files")
    dataset, class_splits = raw.pop("dataset", None), raw.pop("class_splits", None)
    if dataset is not None and (not isinstance(dataset, str) or not dataset.strip()):
        raise DataError(f"split file {path}: dataset must be a name, got {dataset!r}")
    try:
        return split_entries(raw), dataset, class_splits
    except DataError as exc:
        raise DataError(f"split file {path}: {exc}") from None


def named_class_splits(value: Any) -> dict[str, list[str]] | None:
    """``--class-splits``: None, a name (``coco``, ``voc1``, ``voc2``, ``voc3``), a YAML/JSON file of
    ``{split name: [class names]}``, or such a dict -> the checked dict (None stays None).

    Raises:
        DataError: an unknown name that is not a file either, an unparsable file, a malformed mapping.

    Example::

        >>> sorted(named_class_splits("voc1")), named_class_splits("voc1")["NOVEL_CLASSES"][0]
        (['ALL_CLASSES', 'BASE_CLASSES', 'NOVEL_CLASSES'], 'bird')
    """
    if value is None or isinstance(value, dict):
        return None if value is None else check_class_splits(value)
    name = str(value)
    if name.lower() in NAMED_CLASS_SPLITS:
        return {k: list(v) for k, v in NAMED_CLASS_SPLITS[name.lower()].items()}
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(f"class splits '{name}' is neither {', '.join(NAMED_CLASS_SPLITS)} nor a YAML file")
    return check_class_splits(_read_yaml(path, "class-split file"), f"class-split file {path}")


def _read_yaml(path: Path, what: str) -> Any:
    """The YAML in ``path``; a file that does not parse is a one-line DataError naming ``what`` and the path."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse {what} {path}: {' '.join(str(exc).split())[:160]}") from None


def _kind(path: Path) -> str:
    if path.is_dir() and (path / ROBOFLOW_FILE).is_file() or path.suffix.lower() == ".json":
        return "coco"
    return "voc"


def _part(records: list[dict[str, Any]], part: Part | None) -> list[dict[str, Any]]:
    if part is None:
        return records
    k, n = part
    ordered = sorted(records, key=lambda r: r["image_id"])
    bounds = [round(i * len(ordered) / n) for i in range(n + 1)]
    return ordered[bounds[k - 1]:bounds[k]]


def prepare_detection(source: str | Path, out: str | Path, split_file: str | Path | None = None,
                      format: str = "auto", class_splits: Any = None, progress: Callable[[int], None] | None = None,
                      dataset: str | None = None, min_bbox_area: float | None = None) -> dict[str, Any]:
    """Convert a COCO / Roboflow / VOC release into a detection catalog (module docstring: the rules).

    Args:
        source: the release folder (or, with a split file, the folder its paths are relative to).
        out: the catalog directory (new, empty, or a catalog fewray wrote; replaced atomically).
        split_file: a split file (YAML; module docstring); default: the release's own splits.
        format: ``auto`` (default), ``coco`` or ``voc``: what the annotations must be.
        class_splits: ``coco``, ``voc1``..``voc3``, a YAML file or a dict (:func:`named_class_splits`); default
            the split file's ``class_splits``, else ``{"ALL_CLASSES": classes}``. VOC: its ``ALL_CLASSES`` (else
            the union of its lists) is the class list, in that order; COCO: the JSON's categories sorted by id.
        progress: called with 1 after each image. dataset: ``catalog.json``'s name (default: the split file's,
            else ``out``'s folder name).
        min_bbox_area: COCO boxes with ``w * h`` below this (pixels^2) are left out before any check (mmfewshot's
            ``min_bbox_area``; e.g. 1 drops the two zero-size boxes of Aquarium's test split, which are otherwise
            refused); default None keeps every box.

    Returns:
        The ``catalog.json`` dict.

    Raises:
        DataError: ``out`` may not be written (checked before anything is read); a missing source, split file or
            annotation file; COCO and VOC entries mixed or not the ``format`` asked; an image in ``train`` and in
            another split; every error of the COCO / VOC readers (:mod:`~fewray.data.detection.coco`,
            :mod:`~fewray.data.detection.voc`) and of :func:`write_detection_catalog`. Nothing is written then.

    Example::

        >>> import os, tempfile
        >>> info = prepare_detection("../shared/data/bccd", os.path.join(tempfile.mkdtemp(), "bccd"))  # doctest: +SKIP
        >>> info["classes"], info["splits"]["train"]["images"]  # doctest: +SKIP
        (['Platelets', 'RBC', 'WBC'], 205)
    """
    src = Path(source).expanduser()
    if not src.is_dir():
        raise DataError(f"detection source directory not found: {src}")
    check_output_dir(out, (src,))
    if format not in ("auto", "coco", "voc"):
        raise DataError(f"unknown annotation format '{format}' (choose from auto, coco, voc)")
    file_splits = None
    if split_file is not None:
        entries, name, file_splits = read_detection_split_file(split_file)
        dataset = dataset or name
        resolved = {}
        for split, listed in entries.items():
            resolved[split] = []
            for rel, part in listed:
                path = Path(rel) if Path(rel).is_absolute() else src / rel
                if not path.exists():
                    raise DataError(f"annotation file not found: {path} (split '{split}')")
                resolved[split].append((path, part))
        kinds = {_kind(p) for listed in resolved.values() for p, _ in listed}
        if len(kinds) > 1:
            raise DataError(f"split file {split_file} mixes COCO files and VOC image sets: one catalog has one format")
        fmt = kinds.pop()
    else:
        fmt, files, _ = find_annotations(src)
        resolved = {split: [(path, None)] for split, path in files.items()}
    if format != "auto" and format != fmt:
        raise DataError(f"format '{format}' was asked but {src} holds {fmt.upper()} annotations")
    chosen = named_class_splits(class_splits if class_splits is not None else file_splits)
    if fmt == "coco":
        splits, classes, ids = _coco_splits(resolved, min_bbox_area)
    else:
        splits, classes = _voc_splits(resolved, chosen)
        ids = None
    _check_overlap(splits)
    files = {split: {"files": [_shown(p, src) + (f" part {part[0]}/{part[1]}" if part else "") for p, part in listed]}
             for split, listed in resolved.items()}
    return write_detection_catalog(out, splits, classes, chosen, ids, str(src), dataset,
                                   {"format": fmt, "splits": files}, progress)


def _shown(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _coco_splits(resolved: dict[str, list[tuple[Path, Part | None]]], min_bbox_area: float | None = None):
    paths = list(dict.fromkeys(coco_annotation_file(p) for listed in resolved.values() for p, _ in listed))
    parsed, classes, ids = read_coco_categories(paths)
    label_of = {cid: i for i, cid in enumerate(ids)}
    per_file = {path: coco_file_records(path, data, label_of, min_bbox_area=min_bbox_area) for path, data in parsed}
    splits = {split: merge_records([(p, _part(per_file[coco_annotation_file(p)], part)) for p, part in listed])
              for split, listed in resolved.items()}
    return splits, classes, ids


def _voc_splits(resolved: dict[str, list[tuple[Path, Part | None]]], chosen: dict[str, list[str]] | None):
    sets = {}
    for split, listed in resolved.items():
        for path, part in listed:
            root = path if path.name == "Annotations" else path.parent.parent.parent
            if not (root / "Annotations").is_dir():
                raise DataError(f"VOC image set {path} (split '{split}') is not in a VOC root's ImageSets/Main/")
            sets.setdefault(split, []).append((root, _voc_ids(path), part))
    if chosen:
        classes = chosen.get("ALL_CLASSES") or list(dict.fromkeys(n for v in chosen.values() for n in v))
    else:
        classes = sorted({n for listed in sets.values() for root, ids, _ in listed
                          for n in voc_object_names(root, ids)})
    splits, next_id = {}, 1
    for split, listed in sets.items():
        groups = []
        for root, ids, part in listed:
            recs = load_voc_records(root, ids, classes, first_ann_id=next_id)
            next_id += sum(len(r["ann_ids"]) for r in recs)
            groups.append((root, _part(recs, part)))
        splits[split] = merge_records(groups)
    return splits, classes


def _check_overlap(splits: dict[str, list[dict[str, Any]]]) -> None:
    train = {(r["image_id"], Path(r["file_name"]).name) for r in splits.get("train", [])}
    for split, records in splits.items():
        if split == "train":
            continue
        for r in records:
            if (r["image_id"], Path(r["file_name"]).name) in train:
                raise DataError(f"image id {r['image_id']} ({Path(r['file_name']).name}) is in split 'train' and in "
                                f"split '{split}': a catalog must not test on its training images")
