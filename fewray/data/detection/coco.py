"""COCO-format detection data as records, and mmfewshot's ``FewShotCocoDataset``.

Reads COCO instances files (official ``annotations/instances_X.json``, coco128's single JSON, Roboflow's
``{train,valid,test}/_annotations.coco.json``) into records (:mod:`fewray.data.detection.records`): boxes
``[x, y, w, h]`` -> ``x1, y1, x2, y2`` pixels, labels into the files' categories sorted by id, ``iscrowd``
(or ``ignore``) -> ``ignore``. Image files are found as :mod:`fewray.data.sources.multilabel` finds them (the
JSON's folder, ``<release>/<split>/`` beside ``annotations/``, ``images/<split>/``), or under ``img_prefix``.

Checks (each a one-line :class:`~fewray.core.errors.DataError` naming the file and the ids): a missing or
unparsable file; no categories; an annotation of an unknown category or image; a box with non-positive width or
height; a box outside its image by more than 1 pixel (closer ones are clipped to the image:
:func:`~fewray.data.detection.records.check_box`); a missing image file; an image id in two files with different
contents; an annotation id in two images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fewray.core.errors import DataError
from fewray.data.detection.records import check_box, count_boxes, make_record, select_classes
from fewray.data.detection.shots import read_tfa_coco_shots, shot_filter, take_shots, tfa_coco_shot_file
from fewray.data.detection.splits import COCO_SPLIT, check_class_splits, resolve_classes
from fewray.data.sources.multilabel import ROBOFLOW_FILE, _coco_categories, _coco_image_dirs, _load_json


def coco_annotation_file(path: str | Path) -> Path:
    """``path`` if it is a COCO JSON file; a Roboflow folder -> its ``_annotations.coco.json``.

    Raises:
        DataError: ``annotation file not found: PATH``.

    Example::

        >>> coco_annotation_file("../shared/data/aquarium/train").name
        '_annotations.coco.json'
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / ROBOFLOW_FILE).is_file():
        return path / ROBOFLOW_FILE
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    return path


def _categories(path: Path, data: dict) -> dict[int, str]:
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise DataError(f"annotation file {path} has no categories: a detection dataset needs its class names")
    return _coco_categories(path, data)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (Path(a["file_name"]).name == Path(b["file_name"]).name and a["width"] == b["width"]
            and a["height"] == b["height"] and np.array_equal(a["ann_ids"], b["ann_ids"])
            and np.array_equal(a["boxes"], b["boxes"]) and np.array_equal(a["labels"], b["labels"]))


def read_coco_categories(ann_files: list[str | Path]) -> tuple[list[tuple[Path, dict]], list[str], list[int]]:
    """Parse COCO files and join their categories: ``([(path, parsed JSON), ...], class names, category ids)``,
    the classes being every category of the files sorted by id (Roboflow's unused placeholder left out).

    Raises:
        DataError: a missing or unparsable file, one without categories, files that disagree on a category's name.

    Example::

        >>> _, classes, ids = read_coco_categories(["../shared/data/aquarium/train"])
        >>> classes[:3], ids[:3]
        (['fish', 'jellyfish', 'penguin'], [1, 2, 3])
    """
    files = [coco_annotation_file(f) for f in ann_files]
    parsed = [(path, _load_json(path)) for path in files]
    names: dict[int, str] = {}
    for path, data in parsed:
        for cid, name in _categories(path, data).items():
            if names.setdefault(cid, name) != name:
                raise DataError(f"annotation files disagree on category {cid}: '{names[cid]}' and '{name}' ({path})")
    ids = sorted(names)
    return parsed, [names[c] for c in ids], ids


def merge_records(groups: list[tuple[Path | str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Records of several files as one dataset (``groups``: ``[(file, records), ...]``, labels already shared).

    An image id listed twice is kept once when both give the same file name, size and annotations; annotation
    ids must be unique over the dataset (COCO tools index annotations by id).

    Raises:
        DataError: ``image id N is in FILE1 and in FILE2 with different ...``, ``annotation id A is in image N
            (FILE) and in image M (FILE): annotation ids must be unique``.

    Example::

        >>> from fewray.data.detection.records import make_record
        >>> r = make_record(1, "1.jpg", "/d/1.jpg", 9, 9, [[0, 0, 2, 2]], [0], [False], [7])
        >>> len(merge_records([("a.json", [r]), ("b.json", [dict(r)])]))
        1
    """
    records: dict[int, dict[str, Any]] = {}
    origin: dict[int, Path | str] = {}
    ann_owner: dict[int, tuple[int, Path | str]] = {}
    for path, recs in groups:
        for rec in recs:
            iid = rec["image_id"]
            if iid in records:
                if not _same(records[iid], rec):
                    raise DataError(f"image id {iid} is in {origin[iid]} and in {path} with different file names, "
                                    f"sizes or annotations (one dataset needs one image per id)")
                continue
            for a in rec["ann_ids"].tolist():
                if a in ann_owner:
                    raise DataError(f"annotation id {a} is in image {ann_owner[a][0]} ({ann_owner[a][1]}) and in "
                                    f"image {iid} ({path}): annotation ids must be unique")
                ann_owner[a] = (iid, path)
            records[iid], origin[iid] = rec, path
    return list(records.values())


def load_coco_records(ann_files: list[str | Path], img_prefixes: list[str | Path | None] | None = None,
                      min_bbox_area: float | None = None) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    """Records of one or more COCO files as one dataset: ``(records, class names, category ids)``.

    Args:
        ann_files: COCO instances files (or Roboflow folders). Several files are one dataset: their categories
            must agree (id -> name); an image id listed by two files is kept once when both give the same file
            name, size and annotations, and is an error otherwise (:func:`merge_records`).
        img_prefixes: per file, the image folder (``file_name`` is relative to it), or None to look the image
            up (module docstring). Default: None for every file.
        min_bbox_area: leave out annotations whose box (w * h, pixels^2) is smaller (mmfewshot's
            ``min_bbox_area``); default None keeps every box.

    Returns:
        ``(records, classes, category_ids)``: records in file order (then the file's image order), labels indexing
        ``classes`` (:func:`read_coco_categories`), ``category_ids[i]`` the COCO id of ``classes[i]``. Images
        without annotations are kept.

    Raises:
        DataError: the module docstring's checks.

    Example::

        >>> recs, classes, ids = load_coco_records(["../shared/data/coco128/instances_coco128.json"])
        >>> len(recs), len(classes), ids[:3], recs[0]["boxes"].shape[1]
        (128, 80, [1, 2, 3], 4)
    """
    prefixes = list(img_prefixes) if img_prefixes is not None else [None] * len(ann_files)
    if len(prefixes) != len(ann_files):
        raise DataError(f"img_prefix gives {len(prefixes)} folders for {len(ann_files)} annotation files")
    parsed, classes, ids = read_coco_categories(ann_files)
    label_of = {cid: i for i, cid in enumerate(ids)}
    groups = [(path, coco_file_records(path, data, label_of, prefix, min_bbox_area))
              for (path, data), prefix in zip(parsed, prefixes)]
    return merge_records(groups), classes, ids


def coco_file_records(path: Path, data: dict, label_of: dict[int, int], prefix: str | Path | None = None,
                      min_bbox_area: float | None = None) -> list[dict[str, Any]]:
    """The records of one parsed COCO file (``label_of``: category id -> label), checked (module docstring).

    Args:
        path: the file (for messages and image lookup). data: its parsed JSON. label_of: category id -> label.
        prefix: the image folder, or None to look images up. min_bbox_area: see :func:`load_coco_records`.

    Raises:
        DataError: the module docstring's checks.

    Example::

        >>> parsed, classes, ids = read_coco_categories(["../shared/data/aquarium/valid"])
        >>> (path, data), = parsed
        >>> recs = coco_file_records(path, data, {cid: i for i, cid in enumerate(ids)})
        >>> len(recs), recs[0]["file_name"][:8]
        (127, 'IMG_2277')
    """
    own = _categories(path, data)
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise DataError(f"annotation file {path}: 'annotations' must be a list")
    dirs = [Path(prefix).expanduser()] if prefix is not None else _coco_image_dirs(path, path.parent)
    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(data["images"]):
        if (not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str)
                or not isinstance(im.get("width"), int) or not isinstance(im.get("height"), int)):
            raise DataError(f"annotation file {path}: image #{i} needs an integer 'id', 'width', 'height' and a "
                            f"'file_name', got {im!r:.100}")
        if im["id"] in images:
            raise DataError(f"annotation file {path}: image id {im['id']} appears twice")
        saved = im.get("path") if prefix is None else None  # save_dataset's absolute path
        candidates = ([Path(saved)] if isinstance(saved, str) else []) + [d / im["file_name"] for d in dirs]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise DataError(f"image file not found: {im['file_name']} (image id {im['id']} of {path}; looked in "
                            f"{', '.join(str(d) for d in dirs)})")
        images[im["id"]] = {"im": im, "path": found.resolve(), "anns": []}
    for a in anns:
        if not isinstance(a, dict) or not isinstance(a.get("id"), int):
            raise DataError(f"annotation file {path}: an annotation needs an integer 'id', got {a!r:.80}")
        if a.get("category_id") not in own:
            raise DataError(f"annotation file {path}: annotation {a['id']} has category_id {a.get('category_id')!r}, "
                            f"which is not among its categories")
        if a.get("image_id") not in images:
            raise DataError(f"annotation file {path}: annotation {a['id']} refers to image_id {a.get('image_id')!r}, "
                            f"which is not among its images")
        images[a["image_id"]]["anns"].append(a)
    out = []
    for iid, entry in images.items():
        im = entry["im"]
        boxes, labels, ignore, ann_ids, areas = [], [], [], [], []
        seen: set[int] = set()
        for a in entry["anns"]:
            where = f"annotation file {path}: image {iid} annotation {a['id']}"
            if a["id"] in seen:
                raise DataError(f"{where} appears twice")
            seen.add(a["id"])
            bbox = a.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
                raise DataError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r:.60}")
            x, y, w, h = (float(v) for v in bbox)
            if min_bbox_area is not None and w * h < min_bbox_area:  # left out before the checks: a zero box too
                continue
            box = check_box([x, y, x + w, y + h], im["width"], im["height"], where)
            boxes.append(box)
            labels.append(label_of[a["category_id"]])
            ignore.append(bool(a.get("iscrowd", 0)) or bool(a.get("ignore", False)))
            ann_ids.append(a["id"])
            area = a.get("area")
            areas.append(float(area) if isinstance(area, (int, float)) else (box[2] - box[0]) * (box[3] - box[1]))
        out.append(make_record(iid, im["file_name"], str(entry["path"]), im["width"], im["height"], boxes, labels,
                               ignore, ann_ids, areas))
    return out


class FewShotCocoDataset:
    """A COCO-format detection dataset with a class split and K-shot instance sampling (mmfewshot's
    ``FewShotCocoDataset``, https://github.com/open-mmlab/mmfewshot, on TFA's protocol,
    https://arxiv.org/abs/2003.06957). Plain Python: records in :attr:`data_infos`, no model pipeline.

    Args:
        ann_file (str | list[str]): COCO instances file(s) or Roboflow folder(s); several are one dataset
            (:func:`load_coco_records`).
        img_prefix (str | list[str] | None): the image folder (one, or one per file); default None looks each
            image up beside its JSON (module docstring).
        classes (str | list[str] | None): a split name of ``class_splits`` (``"ALL_CLASSES"`` default,
            ``"BASE_CLASSES"``, ``"NOVEL_CLASSES"``) or a list of class names; None: every category of the files.
            Annotations of other classes are dropped, labels index :attr:`CLASSES`.
        class_splits (dict | None): ``{split name: [class names]}``; default :data:`~fewray.data.detection.splits.
            COCO_SPLIT` (TFA's 60 base / 20 novel).
        num_novel_shots, num_base_shots (int | None): K instances per novel / base class (TFA's protocol,
            :mod:`fewray.data.detection.shots`); None keeps all of that group.
        ann_shot_filter (dict[str, int] | None): ``{class name: K}`` overriding the two above per class.
        min_bbox_area (float | None): drop boxes smaller than this (pixels^2) before anything else.
        shot_files (str | None): a directory of TFA shot files (``full_box_{K}shot_{class}_trainval.json``) to
            take the instances from instead of sampling.
        seed (int): sampling seed (default 0).
        filter_empty_gt (bool): drop images without a non-ignored box of :attr:`CLASSES` (mmdet's rule; default
            True).

    Attributes:
        CLASSES (list[str]): the selected class names. ALL_CLASSES (list[str]): every category of the files, id
        order. class_splits (dict). data_infos (list[dict]): the records, labels into ``CLASSES``.
        category_ids (list[int]): the COCO category id of each ``CLASSES`` name. ann_files (list[Path]).

    Raises:
        DataError: bad files (:func:`load_coco_records`), a class the files lack
            (:func:`~fewray.data.detection.splits.resolve_classes`), bad shot counts (:func:`shot_filter`), a
            missing or foreign shot file.

    Example::

        >>> ds = FewShotCocoDataset("../shared/data/coco128/instances_coco128.json", classes="BASE_CLASSES")
        >>> len(ds.CLASSES), ds.category_ids[:2], all(len(r["labels"]) for r in ds.data_infos)
        (60, [8, 10], True)
    """

    def __init__(self, ann_file: str | list[str], img_prefix: str | list[str] | None = None,
                 classes: str | list[str] | None = "ALL_CLASSES", class_splits: dict[str, list[str]] | None = None,
                 num_novel_shots: int | None = None, num_base_shots: int | None = None,
                 ann_shot_filter: dict[str, int] | None = None, min_bbox_area: float | None = None,
                 shot_files: str | None = None, seed: int = 0, filter_empty_gt: bool = True) -> None:
        files = [ann_file] if isinstance(ann_file, (str, Path)) else list(ann_file)
        if not files:
            raise DataError("ann_file lists no annotation file")
        prefixes = (img_prefix if isinstance(img_prefix, (list, tuple)) else [img_prefix] * len(files))
        records, all_classes, ids = load_coco_records(files, prefixes, min_bbox_area)
        self.ann_files = [coco_annotation_file(f) for f in files]
        self.ALL_CLASSES = all_classes
        self.class_splits = check_class_splits(class_splits) if class_splits is not None else dict(COCO_SPLIT)
        where = ", ".join(str(f) for f in self.ann_files)
        self.CLASSES = list(all_classes) if classes is None else resolve_classes(classes, all_classes,
                                                                                 self.class_splits, where)
        self.category_ids = [ids[all_classes.index(n)] for n in self.CLASSES]
        self.seed = int(seed)
        infos = select_classes(records, all_classes, self.CLASSES, drop_empty=filter_empty_gt)
        self.ann_shot_filter = shot_filter(self.CLASSES, classes, self.class_splits, num_novel_shots,
                                           num_base_shots, ann_shot_filter)
        self.data_infos = take_shots(infos, self.CLASSES, self.ann_shot_filter, self.seed, shot_files,
                                     read_tfa_coco_shots, tfa_coco_shot_file)

    def __len__(self) -> int:
        """Number of images."""
        return len(self.data_infos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """The record of image ``i``."""
        return self.data_infos[i]

    def num_boxes(self, include_ignore: bool = False) -> np.ndarray:
        """Boxes per class ``(len(CLASSES),)`` int64 (ignored ones only with ``include_ignore``)."""
        return count_boxes(self.data_infos, len(self.CLASSES), include_ignore)

    def save_dataset(self, path: str | Path) -> Path:
        """Write the exact images and annotations used, as a COCO instances file (mmfewshot's ``save_dataset``).

        ``FewShotCocoDataset(ann_file=path, classes=<the same classes>)`` reloads the same :attr:`data_infos`:
        categories are :attr:`CLASSES` with their ids, boxes ``[x1, y1, x2 - x1, y2 - y1]``, ``iscrowd`` the ignore
        flag, and each image carries its absolute ``path`` (read back before any folder is searched).

        Args:
            path: the JSON file to write (its folder is created).

        Returns:
            The written path.

        Example::

            >>> import os, tempfile
            >>> ds = FewShotCocoDataset("../shared/data/coco128/instances_coco128.json", num_novel_shots=1)
            >>> path = ds.save_dataset(os.path.join(tempfile.mkdtemp(), "tfa_1shot.json"))
            >>> again = FewShotCocoDataset(path)
            >>> len(again) == len(ds), [r["ann_ids"].tolist() for r in again.data_infos[:2]] == [
            ...     r["ann_ids"].tolist() for r in ds.data_infos[:2]]
            (True, True)
        """
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        cats = [{"id": cid, "name": name} for cid, name in sorted(zip(self.category_ids, self.CLASSES))]
        images, anns = [], []
        for rec in self.data_infos:
            images.append({"id": rec["image_id"], "file_name": rec["file_name"], "width": rec["width"],
                           "height": rec["height"], "path": rec["path"]})
            for box, label, ign, aid, area in zip(rec["boxes"].tolist(), rec["labels"].tolist(),
                                                  rec["ignore"].tolist(), rec["ann_ids"].tolist(),
                                                  rec["areas"].tolist()):
                x1, y1, x2, y2 = box
                anns.append({"id": aid, "image_id": rec["image_id"], "category_id": self.category_ids[label],
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": int(ign)})
        info = {"description": "fewray FewShotCocoDataset.save_dataset", "classes": self.CLASSES,
                "ann_shot_filter": self.ann_shot_filter, "seed": self.seed}
        path.write_text(json.dumps({"info": info, "images": images, "annotations": anns, "categories": cats}))
        return path
