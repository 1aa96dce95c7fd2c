"""Pascal VOC-format detection data as records, and mmfewshot's ``FewShotVOCDataset``.

The VOCdevkit layout: ``ROOT/Annotations/<id>.xml``, ``ROOT/JPEGImages/<id>.jpg`` (or the XML's
``<filename>``), ``ROOT/ImageSets/Main/<image_set>.txt`` (one id per line). Each ``<object>`` gives a box
``<bndbox>`` (xmin, ymin, xmax, ymax: VOC's 1-based pixel corners), made 0-based by ``coordinate_offset``
(mmdet's ``-1`` on xmin and ymin), and a ``<difficult>`` flag: difficult objects are ``ignore`` boxes (kept for
evaluation, never training targets) unless ``use_difficult=True`` makes them ordinary.

Record ids: ``image_id`` is the file id as a number when every id of the image set is a number (VOC 2007's
``000005`` -> 5), else the 1-based position of the id among the sorted ``ROOT/Annotations/*.xml`` ids (BCCD's
``BloodImage_00000`` -> 1: the same in every image set of the release; the id stays in ``file_name``);
``ann_ids`` number the objects 1.. in reading order.

Checks (one-line :class:`~fewray.core.errors.DataError` naming the file): a missing image set, XML or image; XML
that does not parse or has no ``<size>``; an object without a name or box; an object class that is not in the
dataset's class list; a box with non-positive size or outside the image by more than 1 pixel (closer: clipped).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from fewray.core.errors import DataError
from fewray.data.detection.records import check_box, count_boxes, make_record, select_classes
from fewray.data.detection.shots import read_tfa_voc_shots, shot_filter, take_shots, tfa_voc_shot_file
from fewray.data.detection.splits import VOC_SPLIT, check_class_splits, resolve_classes
from fewray.data.sources.multilabel import _voc_ids


def _number(element: ET.Element | None, tag: str, xml: Path, what: str) -> float:
    text = element.findtext(tag) if element is not None else None
    try:
        return float((text or "").strip())
    except ValueError:
        raise DataError(f"annotation file {xml}: {what} has no number <{tag}> (got {text!r})") from None


def voc_object_names(root: str | Path, ids: list[str]) -> list[str]:
    """The sorted object names of the annotation files of ``ids`` (a VOC release's class list when none is given).

    Raises:
        DataError: a missing or unparsable XML file.

    Example::

        >>> voc_object_names("../shared/data/bccd/BCCD", ["BloodImage_00000"])
        ['RBC', 'WBC']
    """
    names: set[str] = set()
    for image_id in ids:
        objects = _parse(Path(root) / "Annotations" / f"{image_id}.xml").iter("object")
        names.update((o.findtext("name") or "").strip() for o in objects)
    return sorted(n for n in names if n)


def _parse(xml: Path) -> ET.Element:
    if not xml.is_file():
        raise DataError(f"annotation file not found: {xml}")
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise DataError(f"annotation file {xml} is not valid XML ({exc})") from None


def load_voc_records(root: str | Path, ids: list[str], classes: list[str], use_difficult: bool = False,
                     coordinate_offset: tuple[float, float, float, float] = (-1, -1, 0, 0),
                     first_ann_id: int = 1) -> list[dict[str, Any]]:
    """Records of the VOC images ``ids`` under ``root``, labels indexing ``classes``.

    Args:
        root: the VOC root (``Annotations/``, ``JPEGImages/``). ids: file ids (an image set's lines).
        classes: the class list every object name must be in. use_difficult: difficult objects as ordinary
            boxes (default False: ``ignore``). coordinate_offset: added to (xmin, ymin, xmax, ymax) (default
            mmdet's ``(-1, -1, 0, 0)``). first_ann_id: the first annotation id (default 1).

    Returns:
        One record per id, in order (images without objects included).

    Raises:
        DataError: the module docstring's checks.

    Example::

        >>> recs = load_voc_records("../shared/data/bccd/BCCD", ["BloodImage_00000"], ["RBC", "WBC", "Platelets"])
        >>> recs[0]["image_id"], recs[0]["boxes"][0].tolist(), recs[0]["labels"][:3].tolist()
        (1, [259.0, 176.0, 491.0, 376.0], [1, 0, 0])
    """
    root = Path(root).expanduser()
    index = {c: i for i, c in enumerate(classes)}
    numeric = all(i.isdigit() for i in ids) and len({int(i) for i in ids}) == len(ids)
    position = {} if numeric else {p.stem: k for k, p in enumerate(sorted((root / "Annotations").glob("*.xml")), 1)}
    offset = [float(v) for v in coordinate_offset]
    if len(offset) != 4:
        raise DataError(f"coordinate_offset must be 4 numbers (xmin, ymin, xmax, ymax), got {coordinate_offset!r}")
    out, next_id = [], int(first_ann_id)
    for image_id in ids:
        xml = root / "Annotations" / f"{image_id}.xml"
        ann = _parse(xml)
        size = ann.find("size")
        if size is None:
            raise DataError(f"annotation file {xml} has no <size> (the image's width and height)")
        width, height = int(_number(size, "width", xml, "<size>")), int(_number(size, "height", xml, "<size>"))
        filename = (ann.findtext("filename") or "").strip()
        candidates = [root / "JPEGImages" / n for n in dict.fromkeys([f"{image_id}.jpg", filename]) if n]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(f"image file not found: {candidates[0]} (annotation {xml})")
        boxes, labels, ignore, ann_ids = [], [], [], []
        for k, obj in enumerate(ann.iter("object")):
            name = (obj.findtext("name") or "").strip()
            where = f"annotation file {xml}: object #{k} ({name or 'no name'})"
            if name not in index:
                raise DataError(f"{where}: class '{name}' is not in the class list ({', '.join(classes)})")
            bnd = obj.find("bndbox")
            if bnd is None:
                raise DataError(f"{where} has no <bndbox>")
            raw = [_number(bnd, t, xml, f"object #{k}") for t in ("xmin", "ymin", "xmax", "ymax")]
            box = check_box([v + o for v, o in zip(raw, offset)], width, height, where)
            difficult = (obj.findtext("difficult") or "0").strip().lower() in ("1", "true")
            boxes.append(box)
            labels.append(index[name])
            ignore.append(difficult and not use_difficult)
            ann_ids.append(next_id)
            next_id += 1
        out.append(make_record(int(image_id) if numeric else position[image_id], path.name, str(path.resolve()),
                               width, height, boxes, labels, ignore, ann_ids))
    return out


def image_set_ids(root: str | Path, image_set: str) -> list[str]:
    """The ids of ``ROOT/ImageSets/Main/<image_set>.txt`` (first word of each line).

    Raises:
        DataError: a missing or empty image set (naming the sets there are).

    Example::

        >>> len(image_set_ids("../shared/data/bccd/BCCD", "trainval"))
        292
    """
    listing = Path(root).expanduser() / "ImageSets" / "Main" / f"{image_set}.txt"
    if not listing.is_file():
        have = sorted(p.stem for p in listing.parent.glob("*.txt")) if listing.parent.is_dir() else []
        raise DataError(f"image set not found: {listing} (image sets: {', '.join(have) or 'none'})")
    return _voc_ids(listing)


class FewShotVOCDataset:
    """A Pascal VOC-format detection dataset with a class split and K-shot sampling (mmfewshot's
    ``FewShotVOCDataset``, https://github.com/open-mmlab/mmfewshot, on TFA's protocol,
    https://arxiv.org/abs/2003.06957). Plain Python: records in :attr:`data_infos`.

    Args:
        root (str): the VOC root (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``).
        image_set (str): the image set (default ``"trainval"``).
        classes (str | list[str]): a split name of ``class_splits`` (default ``"ALL_CLASSES_SPLIT1"``) or a list of
            names; labels index :attr:`CLASSES`, objects of other known classes are dropped.
        class_splits (dict | None): default :data:`~fewray.data.detection.splits.VOC_SPLIT`; a user dict for other
            class names (BCCD: ``{"ALL_CLASSES": ["RBC", "WBC", "Platelets"], "BASE_CLASSES": ["RBC", "WBC"],
            "NOVEL_CLASSES": ["Platelets"]}``). Every class name in it is a known class; an object of any other
            class is an error.
        use_difficult (bool): difficult objects as ordinary boxes (default False: ``ignore``).
        coordinate_offset (tuple): added to (xmin, ymin, xmax, ymax), default ``(-1, -1, 0, 0)`` (mmdet's 0-based).
        num_novel_shots, num_base_shots (int | None): K instances per novel / base class of the split that goes with
            ``classes`` (``ALL_CLASSES_SPLIT2`` -> ``NOVEL_CLASSES_SPLIT2``; :mod:`fewray.data.detection.shots`).
        shot_files (str | None): a directory of TFA VOC shot files ``box_{K}shot_{class}_train.txt`` to take the
            images from instead of sampling.
        seed (int): sampling seed (default 0). filter_empty_gt (bool): drop images without a non-ignored box of
            :attr:`CLASSES` (default True).

    Attributes:
        CLASSES (list[str]), ALL_CLASSES (list[str]: every class named by ``class_splits`` or ``classes``),
        class_splits (dict), data_infos (list[dict]: records, labels into ``CLASSES``), root (Path).

    Raises:
        DataError: the module docstring's checks, an unknown class split, bad shot counts, a missing shot file.

    Example::

        >>> splits = {"ALL_CLASSES": ["RBC", "WBC", "Platelets"], "BASE_CLASSES": ["RBC", "WBC"],
        ...           "NOVEL_CLASSES": ["Platelets"]}
        >>> ds = FewShotVOCDataset("../shared/data/bccd/BCCD", "val", "NOVEL_CLASSES", splits)
        >>> ds.CLASSES, len(ds) < 87, set(ds.data_infos[0]["labels"].tolist())
        (['Platelets'], True, {0})
    """

    def __init__(self, root: str, image_set: str = "trainval", classes: str | list[str] = "ALL_CLASSES_SPLIT1",
                 class_splits: dict[str, list[str]] | None = None, use_difficult: bool = False,
                 coordinate_offset: tuple[float, float, float, float] = (-1, -1, 0, 0),
                 num_novel_shots: int | None = None, num_base_shots: int | None = None,
                 shot_files: str | None = None, seed: int = 0, filter_empty_gt: bool = True) -> None:
        self.root = Path(root).expanduser()
        if not (self.root / "Annotations").is_dir():
            raise DataError(f"VOC root {self.root} has no Annotations/ folder (expected the VOCdevkit layout: "
                            f"Annotations/, JPEGImages/, ImageSets/Main/)")
        self.class_splits = check_class_splits(class_splits) if class_splits is not None else dict(VOC_SPLIT)
        listed = [n for names in self.class_splits.values() for n in names]
        if isinstance(classes, (list, tuple)):
            listed += [n for n in classes if isinstance(n, str)]
        self.ALL_CLASSES = list(dict.fromkeys(listed))
        self.CLASSES = resolve_classes(classes, self.ALL_CLASSES, self.class_splits, "the class splits")
        ids = image_set_ids(self.root, image_set)
        records = load_voc_records(self.root, ids, self.ALL_CLASSES, use_difficult, coordinate_offset)
        self.seed = int(seed)
        infos = select_classes(records, self.ALL_CLASSES, self.CLASSES, drop_empty=filter_empty_gt)
        self.ann_shot_filter = shot_filter(self.CLASSES, classes, self.class_splits, num_novel_shots,
                                           num_base_shots, None)
        self.data_infos = take_shots(infos, self.CLASSES, self.ann_shot_filter, self.seed, shot_files,
                                     read_tfa_voc_shots, tfa_voc_shot_file)

    def __len__(self) -> int:
        """Number of images."""
        return len(self.data_infos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """The record of image ``i``."""
        return self.data_infos[i]

    def num_boxes(self, include_ignore: bool = False) -> "Any":
        """Boxes per class ``(len(CLASSES),)`` int64 (ignored ones only with ``include_ignore``)."""
        return count_boxes(self.data_infos, len(self.CLASSES), include_ignore)
