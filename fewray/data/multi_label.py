"""Multi-label catalog splits as arrays, and the Ray Data callable class that streams their training batches.

A multi-label catalog (:mod:`fewray.data.sources.multilabel`: ``catalog.json`` with ``task:
"multi_label"``, a ``labels`` list per image) is read by :func:`load_multi_label_split` into images ``(N, 3, S, S)``
uint8 and a target matrix ``(N, C)`` int8: ``1`` a class of the image, ``0`` not, ``-1`` a class present only as
difficult objects (VOC), which the loss and the metrics ignore (mmpretrain's convention).

:class:`MultiLabelBatchBuilder` is a Ray Data callable class like
:class:`~fewray.data.builders.BatchBuilder` (``map_batches(MultiLabelBatchBuilder, ...)`` over a range
of batch ids, :func:`fewray.platform.streaming.multi_label_dataset`); each output row is one batch:

- ``batch_id`` ``()`` int64
- ``img`` ``(B, 3, S, S)`` uint8, ``gt_label`` ``(B, C)`` int8 (the rows of the target matrix)

Batch ``b`` holds positions ``b*B .. b*B+B-1`` of an endless sequence of shuffled epochs (epoch ``e`` in the
order ``default_rng([seed, e]).permutation(M)``, :class:`~fewray.data.episodes.EpochBatchSampler`)
and its augmentation is seeded by ``(seed, b)``: any worker count and any resume point see the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from fewray.evaluation.multi_label import to_target_matrix
from fewray.data.catalog import _split_path, read_catalog_info, read_columns, read_split_images
from fewray.data.episodes import EpochBatchSampler
from fewray.data.builders import BatchBuilder
from fewray.data.transforms import Augmenter
from fewray.core.errors import DataError

#: ``catalog.json``'s ``task`` of a multi-label catalog
TASK = "multi_label"


@dataclass
class MultiLabelSplit:
    """A decoded multi-label split.

    Attributes:
        images (np.ndarray): ``(N, C, H, W)`` uint8.
        targets (np.ndarray): ``(N, num_classes)`` int8: 1 positive, 0 negative, -1 ignored (difficult only).
        class_names (list[str]): the catalog's classes, index ``0..num_classes-1``.
        image_ids (list[str]): each image's id (COCO image id or VOC file id).
    """

    images: np.ndarray
    targets: np.ndarray
    class_names: list[str]
    image_ids: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes (the catalog's, also those without a positive image in this split)."""
        return len(self.class_names)


def check_multi_label_catalog(root: str) -> dict[str, Any]:
    """``catalog.json`` of a multi-label catalog; a remote catalog (``s3://``...) is not read (``{}``).

    Raises:
        DataError: ``catalog ROOT is not a multi-label catalog (...)``: a local catalog without ``catalog.json``,
            or one whose ``task`` is not ``multi_label`` (a few-shot catalog: one class per image).

    Example::

        >>> check_multi_label_catalog("data/omniglot")  # doctest: +SKIP
        Traceback (most recent call last):
        fewray.core.errors.DataError: catalog data/omniglot is not a multi-label catalog ...
    """
    if "://" in root:
        return {}
    _split_path(root, "train")  # a missing directory or split: the catalog's own one-line error
    info = read_catalog_info(root)
    if info.get("task") != TASK:
        task = info.get("task", "few-shot classification, one class per image") if info else "no catalog.json"
        raise DataError(f"catalog {root} is not a multi-label catalog ({task}); make one with "
                        f"pipelines/prepare_data.py multilabel --source COCO_OR_VOC_RELEASE --out DIR")
    return info


def load_multi_label_split(root: str, split: str, num_classes: int | None = None, cache: bool = True) -> MultiLabelSplit:
    """Read and decode a multi-label split (images through the catalog's ``.decoded/`` cache).

    Args:
        root: catalog directory or URI. split: ``train``, ``val`` or ``test``.
        num_classes: the number of classes; default ``catalog.json``'s ``num_classes`` (needed for a remote
            catalog without one).
        cache: use and fill the decoded-image cache.

    Raises:
        DataError: a missing catalog or split, a file without the ``labels`` column, a class index outside
            ``0..num_classes-1``, an undecodable image.

    Example::

        >>> data = load_multi_label_split("data/coco_ml", "val")  # doctest: +SKIP
        >>> data.images.shape, data.targets.shape, data.targets.dtype  # doctest: +SKIP
        ((103, 3, 224, 224), (103, 80), dtype('int8'))
    """
    info = read_catalog_info(root) if "://" not in root else {}
    path = _split_path(root, split)
    table = read_columns(path, ["labels"])
    names = set(pq.read_schema(path).names)
    extra = read_columns(path, [c for c in ("difficult_labels", "image_id") if c in names])
    c = int(num_classes if num_classes is not None else info.get("num_classes", 0))
    if c < 1:
        raise DataError(f"catalog {root}: the number of classes is unknown (catalog.json has no num_classes)")
    labels = table.column("labels").to_pylist()
    difficult = extra.column("difficult_labels").to_pylist() if "difficult_labels" in names else [None] * len(labels)
    rows = [{"labels": pos or [], "difficult_labels": diff or []} for pos, diff in zip(labels, difficult)]
    try:  # difficult-only classes -1 (ignored), as the evaluator reads catalog rows
        targets = to_target_matrix(rows, len(rows), c) if rows else np.zeros((0, c), np.int8)
    except ValueError as exc:
        raise DataError(f"catalog file {path}: {exc}") from None
    classes = [str(n) for n in info.get("classes", [])] or [str(k) for k in range(c)]
    ids = extra.column("image_id").to_pylist() if "image_id" in names else [str(i) for i in range(len(labels))]
    images = read_split_images(root, split, 3, len(labels), cache)
    return MultiLabelSplit(images=images, targets=targets, class_names=classes, image_ids=[str(i) for i in ids])


class MultiLabelBatchBuilder(BatchBuilder):
    """Ray Data callable class: batch ids -> shuffled batches of a multi-label split (see the module docstring):
    :class:`~fewray.data.builders.BatchBuilder` with the split's target rows as ``gt_label``.

    Args:
        root (str): catalog directory; split (str): catalog split; batch_size (int): B, images per batch;
        seed (int): shuffling and augmentation seed; num_classes (int | None): default the catalog's;
        augment (str): training augmentation preset (``none``, ``flip``; :mod:`fewray.data.transforms`);
        image_size (int): its output side.

    Raises:
        DataError: the split cannot be read, or holds no images.

    Example (in memory, with :meth:`from_arrays`; Ray Data passes ``root``, ``split``, ... instead)::

        >>> images = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1).repeat(3, 1).repeat(4, 2).repeat(4, 3)
        >>> targets = np.eye(5, 3, dtype=np.int8)
        >>> builder = MultiLabelBatchBuilder.from_arrays(images, targets, batch_size=2, seed=0)
        >>> out = builder({"id": np.array([3])})
        >>> out["img"].shape, out["gt_label"].shape, out["batch_id"]
        ((1, 2, 3, 4, 4), (1, 2, 3), array([3]))
        >>> bool((out["gt_label"][0] == targets[out["img"][0, :, 0, 0, 0]]).all())  # each image keeps its labels
        True
    """

    def __init__(self, root: str, split: str, batch_size: int, seed: int, num_classes: int | None = None,
                 augment: str = "none", image_size: int = 224) -> None:
        data = load_multi_label_split(root, split, num_classes)
        if len(data.targets) == 0:
            raise DataError(f"the {split} split of {root} has no images")
        self._setup(data.images, data.targets, batch_size, seed, augment, image_size)

    @classmethod
    def from_arrays(cls, images: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, augment: str = "none",
                    image_size: int | None = None) -> MultiLabelBatchBuilder:
        """A builder over ``images`` ``(M, C, H, W)`` uint8 and ``targets`` ``(M, num_classes)`` in memory.

        Raises:
            ValueError: arrays of different lengths, or no images.
        """
        if len(images) != len(targets) or len(images) == 0:
            raise ValueError(f"images and targets must be non-empty and of one length, got {len(images)} and "
                             f"{len(targets)}")
        self = cls.__new__(cls)
        self._setup(np.asarray(images), np.asarray(targets), batch_size, seed, augment,
                    image_size or images.shape[-1])
        return self

    def _setup(self, images: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, augment: str,
               image_size: int) -> None:
        self.images, self.labels = images, targets  # BatchBuilder's __call__ stacks labels[indices] as gt_label
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.augment = Augmenter(augment, image_size, seed)
        self.sampler = EpochBatchSampler(len(targets), self.batch_size, self.seed)
