"""The training and evaluation sets of a detection config, read from a detection catalog (no Ray).

:func:`training_records` is what the detection task's stream trains on: the catalog split's records, cut to the
config's classes (``data.classes``; labels re-indexed into them) and, with ``data.few_shot``, to TFA's balanced
K-shot set (:func:`~fewray.data.detection.coco.take_shots`; sampled from ``(seed, K)``, or read from TFA's shot
files). :class:`DetectionStepBuilder` is the Ray Data callable that turns step ids into batches of them
(:class:`QuerySupportStepBuilder`: with their support instances, for the query-support detectors;
:class:`MPSRStepBuilder`: with MPSR's multi-scale object crops;
:func:`model_init_supports` the support images their ``model_init`` averages).
:func:`eval_records` is the evaluation side: every image of a split with the annotations of the evaluated classes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from fewray.data.detection.catalog import check_detection_catalog, read_detection_split
from fewray.data.detection.coco import shot_filter, take_shots
from fewray.data.detection.records import select_classes
from fewray.data.detection.shots import (read_tfa_coco_shots, read_tfa_voc_shots, tfa_coco_shot_file,
                                         tfa_voc_shot_file)
from fewray.data.detection.splits import resolve_classes


@lru_cache(maxsize=1)
def example_catalog() -> str:
    """A small real detection catalog for the examples: BCCD (../shared/data/bccd, 3 blood-cell classes, VOC) with
    its classes as the novel split, written once per process to a temporary directory."""
    import tempfile

    from fewray.data.detection.prepare import prepare_detection

    out = f"{tempfile.mkdtemp()}/bccd"
    prepare_detection("../shared/data/bccd", out, class_splits={"ALL_CLASSES": ["RBC", "WBC", "Platelets"],
                                                                 "NOVEL_CLASSES": ["WBC", "Platelets"],
                                                                 "BASE_CLASSES": ["RBC"]})
    return out


def model_classes(root: str, classes: Any) -> list[str]:
    """The class names a detector trained on ``root`` predicts: ``classes`` (a class split of the catalog or a
    list of names; None: every class of the catalog), resolved against the catalog.

    Raises:
        DataError: not a detection catalog; an unknown split or a class the catalog lacks (naming it).

    Example::

        >>> model_classes(example_catalog(), "NOVEL_CLASSES"), model_classes(example_catalog(), None)
        (['WBC', 'Platelets'], ['RBC', 'WBC', 'Platelets'])
    """
    info = check_detection_catalog(root)
    if classes is None:
        return list(info["classes"])
    return resolve_classes(classes, list(info["classes"]), dict(info.get("class_splits") or {}), source=root)


def training_records(root: str, split: str, classes: Any = None, few_shot: dict[str, Any] | None = None,
                     with_images: bool = True) -> list[dict[str, Any]]:
    """The records a detector trains on (labels ``0..len(model_classes)-1``; images without a box left out).

    Args:
        root: a detection catalog. split: its split (``few_shot["split"]`` wins when given).
        classes: ``data.classes``. few_shot: ``data.few_shot`` as a dict (``num_novel_shots``, ``num_base_shots``,
            ``ann_shot_filter``, ``seed``, ``shot_files``, ``split``) or None: every annotation.
        with_images: keep the image bytes (the stream needs them; a check does not).

    Raises:
        DataError: as :func:`model_classes`; a missing split; bad shot counts or shot files (naming them).

    Example::

        >>> recs = training_records(example_catalog(), "train", "ALL_CLASSES", {"num_novel_shots": 2, "seed": 0},
        ...                         with_images=False)
        >>> counts = np.bincount(np.concatenate([r["labels"] for r in recs]), minlength=3)
        >>> counts[1:].tolist(), bool(counts[0] > 100)   # 2 WBC, 2 Platelets; every RBC (no base shot count)
        ([2, 2], True)
    """
    info = check_detection_catalog(root)
    names = list(info["classes"])
    splits = dict(info.get("class_splits") or {})
    keep = model_classes(root, classes)
    few_shot = dict(few_shot or {})
    records = read_detection_split(root, few_shot.get("split") or split, images=with_images)
    records = select_classes(records, names, keep)
    if few_shot:
        shots = shot_filter(keep, classes if classes is not None else "ALL_CLASSES", splits,
                            few_shot.get("num_novel_shots"), few_shot.get("num_base_shots"),
                            few_shot.get("ann_shot_filter"))
        voc = info.get("format") == "voc"
        records = take_shots(records, keep, shots, int(few_shot.get("seed", 0)), few_shot.get("shot_files"),
                             read_tfa_voc_shots if voc else read_tfa_coco_shots,
                             tfa_voc_shot_file if voc else tfa_coco_shot_file)
    return records


def eval_records(root: str, split: str, with_images: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """``(records, class names)`` of a split for evaluation: every image (also those without a box), every
    annotation (ignore boxes kept: crowd regions / difficult boxes), labels into the catalog's classes.

    Raises:
        DataError: not a detection catalog, or a missing split.

    Example::

        >>> recs, names = eval_records(example_catalog(), "test", with_images=False)
        >>> len(recs), names
        (72, ['RBC', 'WBC', 'Platelets'])
    """
    info = check_detection_catalog(root)
    return read_detection_split(root, split, images=with_images), list(info["classes"])


class DetectionStepBuilder:
    """Ray Data callable class: training step ids -> detection batches (one row per step).

    Loads :func:`training_records` once (in its actor) and builds step ``i`` with
    :class:`~fewray.data.detection.builder.DetectionBatchBuilder` from ``(seed, i)`` alone, so any number of Ray
    Train workers and any resume point see the same batches. Row columns (each with a leading axis of 1 per id):
    ``img`` uint8 ``(B, 3, S, S)``, ``img_hw`` int32 ``(B, 2)``, ``boxes`` float32 ``(B, M, 4)``, ``labels`` int64
    ``(B, M)`` (-1 padding), ``image_id`` int64 ``(B,)``.

    Args:
        root, split, classes, few_shot: as :func:`training_records`. batch_size (int): images per step.
        seed (int): the order's seed. min_size, max_size (int): the resize rule. flip (bool): random horizontal flips.

    Example::

        >>> b = DetectionStepBuilder(example_catalog(), "train", "BASE_CLASSES", None, 2, 0, 96, 128, True)
        >>> row = b({"id": np.array([0, 1])})
        >>> row["img"].shape, row["labels"].shape[:2]
        ((2, 2, 3, 128, 128), (2, 2))
    """

    def __init__(self, root: str, split: str, classes: Any, few_shot: dict[str, Any] | None, batch_size: int,
                 seed: int, min_size: int, max_size: int, flip: bool) -> None:
        from fewray.data.detection.builder import DetectionBatchBuilder

        records = training_records(root, split, classes, few_shot)
        self.builder = DetectionBatchBuilder(records, batch_size, seed, min_size=min_size, max_size=max_size,
                                             flip=flip)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Build the steps of ``batch['id']``."""
        rows = [self.builder(int(i)) for i in batch["id"]]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class QuerySupportStepBuilder(DetectionStepBuilder):
    """Ray Data callable class: step ids -> query-support rows
    (:class:`~fewray.data.detection.query_support.QuerySupportBatchBuilder` over :func:`training_records`).

    Args:
        root, split, classes, few_shot, batch_size, seed, min_size, max_size, flip: as :class:`DetectionStepBuilder`.
        query_support (dict): ``data.query_support``'s options (``QuerySupportConfig.dataset_options()``).

    Example::

        >>> b = QuerySupportStepBuilder(example_catalog(), "train", "ALL_CLASSES", {"num_novel_shots": 2}, 2, 0, 64,
        ...     96, True, {"num_support_shots": 1, "support_pipeline": [{"type": "GenerateMask", "target_size": 32}]})
        >>> row = b({"id": np.array([3])})
        >>> row["support_img"].shape, row["step"].tolist()
        ((1, 1, 3, 4, 32, 32), [3])
    """

    def __init__(self, root: str, split: str, classes: Any, few_shot: dict[str, Any] | None, batch_size: int,
                 seed: int, min_size: int, max_size: int, flip: bool, query_support: dict[str, Any]) -> None:
        from fewray.data.detection.query_support import QuerySupportBatchBuilder

        records = training_records(root, split, classes, few_shot)
        self.builder = QuerySupportBatchBuilder(records, model_classes(root, classes), batch_size, seed, min_size,
                                                max_size, flip, query_support)


def model_init_supports(root: str, classes: Any, few_shot: dict[str, Any] | None,
                        query_support: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The support images a query-support detector's ``model_init`` averages: every support instance of the
    training set (its K-shot set when ``few_shot``; the first ``num_used_support_shots`` per class), through the
    support pipeline: ``(images (N, C, T, T) uint8, labels (N,) int64)``.

    Raises:
        DataError: as :func:`training_records`; ConfigError: a bad support pipeline.

    Example::

        >>> imgs, labels = model_init_supports(example_catalog(), "ALL_CLASSES", {"num_novel_shots": 2, "num_base_shots": 2},
        ...     {"support_pipeline": [{"type": "CropResizeInstance", "target_size": 24}]})
        >>> imgs.shape, labels.tolist()
        ((6, 3, 24, 24), [0, 0, 1, 1, 2, 2])
    """
    from fewray.data.detection.query_support import support_images, support_set
    from fewray.data.detection.support_transforms import build_support_pipeline

    records = training_records(root, "train", classes, few_shot)
    instances = support_set(records, len(model_classes(root, classes)), query_support.get("num_used_support_shots"))
    images = support_images(records, instances, build_support_pipeline(query_support["support_pipeline"]))
    return images, np.array([label for label, _, _ in instances], np.int64)


class MPSRStepBuilder(DetectionStepBuilder):
    """Ray Data callable class: step ids -> detection rows with MPSR's multi-scale object crops
    (:class:`~fewray.data.detection.mpsr.MPSRBatchBuilder` over :func:`training_records`).

    Args:
        root, split, classes, few_shot, batch_size, seed, min_size, max_size, flip: as :class:`DetectionStepBuilder`.
        scales (list[int]): the crops' sides. context_ratio (float): the crops' context.

    Example::

        >>> b = MPSRStepBuilder(example_catalog(), "train", "ALL_CLASSES", None, 2, 0, 64, 96, True, [16])
        >>> b({"id": np.array([1])})["aux_img_0"].shape
        (1, 2, 3, 16, 16)
    """

    def __init__(self, root: str, split: str, classes: Any, few_shot: dict[str, Any] | None, batch_size: int,
                 seed: int, min_size: int, max_size: int, flip: bool, scales: list[int],
                 context_ratio: float = 1.0 / 7.0) -> None:
        from fewray.data.detection.mpsr import MPSRBatchBuilder

        self.builder = MPSRBatchBuilder(training_records(root, split, classes, few_shot), batch_size, seed, min_size,
                                        max_size, flip, scales, context_ratio)
