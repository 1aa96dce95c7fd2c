"""Class splits of few-shot object detection: TFA's COCO split and the three Pascal VOC splits.

Few-shot detection trains on *base* classes with many boxes, then adapts to *novel* classes with ``K`` boxes
each. The splits are the field's (TFA, Wang et al. 2020, https://arxiv.org/abs/2003.06957; mmfewshot's
``FewShotCocoDataset`` / ``FewShotVOCDataset``, https://github.com/open-mmlab/mmfewshot):

- :data:`COCO_SPLIT`: the 20 classes COCO shares with Pascal VOC are novel, the other 60 base;
  ``ALL_CLASSES`` is COCO's 80 category names in category-id order.
- :data:`VOC_SPLIT`: three splits of VOC's 20 classes, each with 5 novel classes; ``ALL_CLASSES_SPLITk`` lists
  the 15 base classes, then the 5 novel ones (mmfewshot's order, which fixes the label indices).

A split dict maps a split name to a list of class names. :func:`resolve_classes` turns a split name or a list of
names into the class list of a dataset, checking every name against the dataset's own classes. Users give
their own dict for other datasets (BCCD: ``{"ALL_CLASSES": ["RBC", "WBC", "Platelets"], "BASE_CLASSES":
["RBC", "WBC"], "NOVEL_CLASSES": ["Platelets"]}``).
"""

from __future__ import annotations

import re
from typing import Any

from fewray.core.errors import DataError

#: COCO's 80 category names in category-id order (ids 1..90 with gaps)
COCO_ALL_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]
#: TFA's COCO novel classes: the 20 Pascal VOC classes by their COCO names (mmfewshot's order)
COCO_NOVEL_CLASSES = [
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table", "dog",
    "horse", "motorcycle", "person", "potted plant", "sheep", "couch", "train", "tv",
]

#: TFA's COCO split: ``ALL_CLASSES`` (80, id order), ``NOVEL_CLASSES`` (20), ``BASE_CLASSES`` (60, id order)
COCO_SPLIT: dict[str, list[str]] = {
    "ALL_CLASSES": list(COCO_ALL_CLASSES),
    "NOVEL_CLASSES": list(COCO_NOVEL_CLASSES),
    "BASE_CLASSES": [c for c in COCO_ALL_CLASSES if c not in COCO_NOVEL_CLASSES],
}

_VOC_BASE = {
    1: ["aeroplane", "bicycle", "boat", "bottle", "car", "cat", "chair", "diningtable", "dog", "horse", "person",
        "pottedplant", "sheep", "train", "tvmonitor"],
    2: ["bicycle", "bird", "boat", "bus", "car", "cat", "chair", "diningtable", "dog", "motorbike", "person",
        "pottedplant", "sheep", "train", "tvmonitor"],
    3: ["aeroplane", "bicycle", "bird", "bottle", "bus", "car", "chair", "cow", "diningtable", "dog", "horse",
        "person", "pottedplant", "train", "tvmonitor"],
}
_VOC_NOVEL = {
    1: ["bird", "bus", "cow", "motorbike", "sofa"],
    2: ["aeroplane", "bottle", "cow", "horse", "sofa"],
    3: ["boat", "cat", "motorbike", "sheep", "sofa"],
}
#: the three Pascal VOC splits: ``ALL_CLASSES_SPLITk`` (15 base then 5 novel), ``BASE_CLASSES_SPLITk``,
#: ``NOVEL_CLASSES_SPLITk`` for k = 1, 2, 3
VOC_SPLIT: dict[str, list[str]] = {}
for _k in (1, 2, 3):
    VOC_SPLIT[f"ALL_CLASSES_SPLIT{_k}"] = _VOC_BASE[_k] + _VOC_NOVEL[_k]
    VOC_SPLIT[f"BASE_CLASSES_SPLIT{_k}"] = list(_VOC_BASE[_k])
    VOC_SPLIT[f"NOVEL_CLASSES_SPLIT{_k}"] = list(_VOC_NOVEL[_k])
del _k

#: ``--class-splits`` names of ``prepare_data.py detection`` -> the split dict
NAMED_CLASS_SPLITS = {
    "coco": COCO_SPLIT,
    **{f"voc{k}": {name: VOC_SPLIT[f"{name}_SPLIT{k}"] for name in ("ALL_CLASSES", "BASE_CLASSES", "NOVEL_CLASSES")}
       for k in (1, 2, 3)},
}


def check_class_splits(class_splits: Any, where: str = "class_splits") -> dict[str, list[str]]:
    """A class-split dict, checked: a non-empty mapping of split names to non-empty lists of distinct class names.

    Args:
        class_splits: ``{split name: [class name, ...]}``.
        where: how the error names it (a file, ``class_splits``).

    Returns:
        A copy with lists of ``str``.

    Raises:
        DataError: anything else, naming ``where`` and the split.

    Example::

        >>> check_class_splits({"BASE_CLASSES": ["RBC", "WBC"], "NOVEL_CLASSES": ["Platelets"]})
        {'BASE_CLASSES': ['RBC', 'WBC'], 'NOVEL_CLASSES': ['Platelets']}
        >>> check_class_splits({"NOVEL_CLASSES": []})
        Traceback (most recent call last):
        fewray.core.errors.DataError: class_splits: split 'NOVEL_CLASSES' must be a non-empty list of class names, got []
    """
    if not isinstance(class_splits, dict) or not class_splits:
        raise DataError(f"{where} must map split names to lists of class names, got {class_splits!r:.80}")
    out: dict[str, list[str]] = {}
    for name, names in class_splits.items():
        if (not isinstance(names, (list, tuple)) or not names
                or not all(isinstance(n, str) and n for n in names)):
            raise DataError(f"{where}: split '{name}' must be a non-empty list of class names, got {names!r:.80}")
        if len(set(names)) != len(names):
            twice = next(n for n in names if list(names).count(n) > 1)
            raise DataError(f"{where}: split '{name}' names class '{twice}' twice")
        out[str(name)] = [str(n) for n in names]
    return out


def resolve_classes(spec: str | list[str] | tuple[str, ...], available: list[str],
                    class_splits: dict[str, list[str]], source: str = "the dataset") -> list[str]:
    """The class names a dataset uses: a split name of ``class_splits`` or an explicit list of names.

    Args:
        spec: a key of ``class_splits`` (``"BASE_CLASSES"``, ``"ALL_CLASSES_SPLIT1"``) or a list of class names.
        available: the dataset's own class names (its annotation file's categories, its class list).
        class_splits: ``{split name: [class name, ...]}`` (:data:`COCO_SPLIT`, :data:`VOC_SPLIT`, a user's).
        source: how the error names the dataset (its annotation file; default ``"the dataset"``).

    Returns:
        The names, in the split's (or the list's) order: label ``i`` is ``names[i]``.

    Raises:
        DataError: an unknown split name (naming those there are), an empty list or a name listed twice, or a
            class the dataset lacks ("class split NOVEL_CLASSES names 'zebra', which ANNFILE does not have
            (classes: ...)").

    Example::

        >>> resolve_classes("NOVEL_CLASSES_SPLIT1", VOC_SPLIT["ALL_CLASSES_SPLIT1"], VOC_SPLIT)
        ['bird', 'bus', 'cow', 'motorbike', 'sofa']
        >>> resolve_classes(["WBC"], ["RBC", "WBC", "Platelets"], {})
        ['WBC']
        >>> resolve_classes("BASE_CLASSES", ["cat"], COCO_SPLIT)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fewray.core.errors.DataError: class split BASE_CLASSES names 'truck', which the dataset does not have (classes: cat)
    """
    if isinstance(spec, str):
        if spec not in class_splits:
            raise DataError(f"unknown class split '{spec}' (class splits: {', '.join(class_splits) or 'none'}; "
                            f"or give a list of class names)")
        names, label = list(class_splits[spec]), f"class split {spec}"
    elif isinstance(spec, (list, tuple)) and spec and all(isinstance(n, str) for n in spec):
        names, label = list(spec), "classes"
    else:
        raise DataError(f"classes must be a class split name or a non-empty list of class names, got {spec!r:.80}")
    if len(set(names)) != len(names):
        raise DataError(f"{label} names class '{next(n for n in names if names.count(n) > 1)}' twice")
    have = set(available)
    for name in names:
        if name not in have:
            shown = ", ".join(available[:30]) + (f", ... ({len(available)} in all)" if len(available) > 30 else "")
            raise DataError(f"{label} names '{name}', which {source} does not have (classes: {shown})")
    return names


def novel_and_base(spec: str | list[str] | tuple[str, ...],
                   class_splits: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """The novel and base classes that go with ``spec`` (mmfewshot's rule): ``NOVEL_CLASSES`` / ``BASE_CLASSES``,
    with the ``_SPLITk`` suffix of ``spec`` when it has one (``ALL_CLASSES_SPLIT2`` -> ``NOVEL_CLASSES_SPLIT2``).

    Args:
        spec: the dataset's ``classes`` (a split name or a list of names; a list takes the unsuffixed splits).
        class_splits: the split dict.

    Returns:
        ``(novel names, base names)``; a list is empty when ``class_splits`` lacks that split.

    Example::

        >>> novel, base = novel_and_base("ALL_CLASSES_SPLIT2", VOC_SPLIT)
        >>> novel, len(base)
        (['aeroplane', 'bottle', 'cow', 'horse', 'sofa'], 15)
        >>> [len(x) for x in novel_and_base("ALL_CLASSES", COCO_SPLIT)]
        [20, 60]
    """
    match = re.search(r"_SPLIT\d+$", spec) if isinstance(spec, str) else None
    suffix = match.group(0) if match else ""
    return list(class_splits.get(f"NOVEL_CLASSES{suffix}", [])), list(class_splits.get(f"BASE_CLASSES{suffix}", []))
