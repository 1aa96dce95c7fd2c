"""Query-support batches of the meta-learning detectors (Meta R-CNN, FSDetView, Attention-RPN, MPSR's data side).

mmfewshot pairs every batch of query images with a batch of support instances (its ``NWayKShotDataset`` /
``QueryAwareDataset`` and ``NWayKShotDataloader``). Here a training step ``s`` is rebuilt from ``(seed, s)`` alone:

- the queries are the detection batch of step ``s`` (:class:`~fewray.data.detection.builder.DetectionBatchBuilder`);
- :class:`NWayKShotDataset`: ``num_support_ways`` classes drawn for the step (default: every class, as Meta R-CNN
  and FSDetView train), ``num_support_shots`` instances of each, shared by the step's queries; each query's
  *training class* is one of its ground-truth classes among the ways (-1 when none is);
- :class:`QueryAwareDataset` (Attention-RPN): per query, one of its own classes (the positive way, always there)
  and ``num_support_ways - 1`` other classes, ``num_support_shots`` instances each, from other images when the
  class has any;

and every support instance goes through the support pipeline (:mod:`~fewray.data.detection.support_transforms`).
Random draws use ``numpy.random.default_rng([seed, step, ...])``, so any Ray Train worker rebuilds any step and the
pairs are the same for any number of workers.

:func:`support_set` is the model-init side: every support instance of every class (mmfewshot's ``model_init``
dataset), the detector's class vectors are averaged from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fewray.core.errors import DataError

#: a distinct random stream of each purpose, so adding one never shifts another
_WAYS, _SHOTS, _QUERY_CLASS = 1, 2, 3


def instances_by_class(records: list[dict[str, Any]], num_classes: int,
                       num_used_support_shots: int | None = None) -> list[list[tuple[int, int]]]:
    """Per class, the ``(record index, box index)`` of its non-ignored boxes in record order, cut to the first
    ``num_used_support_shots`` (mmfewshot's option; None: all).

    Example::

        >>> recs = [{"labels": np.array([0, 1, 0]), "ignore": np.array([False, False, True])},
        ...         {"labels": np.array([1]), "ignore": np.array([False])}]
        >>> instances_by_class(recs, 2), instances_by_class(recs, 2, num_used_support_shots=1)
        ([[(0, 0)], [(0, 1), (1, 0)]], [[(0, 0)], [(0, 1)]])
    """
    out: list[list[tuple[int, int]]] = [[] for _ in range(num_classes)]
    for r, rec in enumerate(records):
        for b, (label, ignore) in enumerate(zip(rec["labels"].tolist(), rec["ignore"].tolist())):
            if not ignore:
                out[label].append((r, b))
    if num_used_support_shots is not None:
        out = [pool[:int(num_used_support_shots)] for pool in out]
    return out


class NWayKShotDataset:
    """mmfewshot's ``NWayKShotDataset``: each step's support set of ``num_support_ways`` classes x
    ``num_support_shots`` instances, shared by the step's queries (module docstring).

    Args:
        records (list[dict]): the training records (labels ``0..C-1``). class_names (list[str]): the C names.
        num_support_ways (int | None): classes per step (None: all C). num_support_shots (int): instances per class.
        one_support_shot_per_image (bool): no two support instances of a step from one image. Default False.
        num_used_support_shots (int | None): per class, only the first this many instances are supports.
        repeat_times (int): accepted for mmfewshot's configs; the stream is endless by steps (``train.num_steps``),
            so it changes nothing here. seed (int): the draws' seed.

    Raises:
        DataError: ``num_support_ways`` above the classes, or a class with fewer than ``num_support_shots`` support
            instances (naming the class and count).

    Example::

        >>> recs = [{"labels": np.array([i % 3]), "ignore": np.array([False])} for i in range(9)]
        >>> ds = NWayKShotDataset(recs, ["a", "b", "c"], num_support_ways=2, num_support_shots=2, seed=0)
        >>> sup = ds.supports(5)
        >>> len(sup), sorted({lab for lab, _, _ in sup}) == sorted({lab for lab, _, _ in ds.supports(5)})
        (4, True)
        >>> NWayKShotDataset(recs, ["a", "b", "c"], num_support_shots=4)
        Traceback (most recent call last):
        fewray.core.errors.DataError: class 'a' has 3 support instances, fewer than num_support_shots=4 (lower num_support_shots or give more shots)
    """

    def __init__(self, records: list[dict[str, Any]], class_names: list[str], num_support_ways: int | None = None,
                 num_support_shots: int = 1, one_support_shot_per_image: bool = False,
                 num_used_support_shots: int | None = None, repeat_times: int = 1, seed: int = 0) -> None:
        self.records, self.class_names = records, list(class_names)
        c = len(self.class_names)
        self.ways = c if num_support_ways is None else int(num_support_ways)
        self.shots = int(num_support_shots)
        if not 1 <= self.ways <= c:
            raise DataError(f"num_support_ways={num_support_ways} is larger than the {c} classes trained "
                            f"({', '.join(self.class_names)})" if self.ways > c else
                            f"num_support_ways must be >= 1, got {num_support_ways}")
        if self.shots < 1:
            raise DataError(f"num_support_shots must be >= 1, got {num_support_shots}")
        self.one_per_image = bool(one_support_shot_per_image)
        self.repeat_times, self.seed = int(repeat_times), int(seed)
        self.pools = instances_by_class(records, c, num_used_support_shots)
        for label, pool in enumerate(self.pools):
            if len(pool) < self.shots:
                raise DataError(f"class '{self.class_names[label]}' has {len(pool)} support instances, fewer than "
                                f"num_support_shots={self.shots} (lower num_support_shots or give more shots)")

    def ways_of(self, step: int) -> list[int]:
        """The classes of step ``step``'s support set, ascending."""
        c = len(self.class_names)
        if self.ways == c:
            return list(range(c))
        rng = np.random.default_rng([self.seed, int(step), _WAYS])
        return sorted(rng.choice(c, self.ways, replace=False).tolist())

    def _shots(self, rng: np.random.Generator, label: int, used: set[int], avoid: int | None) -> list[tuple[int, int]]:
        pool = self.pools[label]
        order = rng.permutation(len(pool)).tolist()
        picked: list[tuple[int, int]] = []
        for pass_avoid in ((avoid,), ()):  # other images first; the query's own image only when nothing else is left
            for i in order:
                r, b = pool[i]
                if (r, b) in picked or r in pass_avoid or (self.one_per_image and r in used):
                    continue
                picked.append((r, b))
                used.add(r)
                if len(picked) == self.shots:
                    return picked
        raise DataError(f"class '{self.class_names[label]}': fewer than num_support_shots={self.shots} instances "
                        f"from distinct images (one_support_shot_per_image)")

    def supports(self, step: int) -> list[tuple[int, int, int]]:
        """Step ``step``'s support instances ``(label, record index, box index)``, class-major (ways x shots)."""
        rng = np.random.default_rng([self.seed, int(step), _SHOTS])
        used: set[int] = set()
        return [(label, r, b) for label in self.ways_of(step) for r, b in self._shots(rng, label, used, None)]

    def query_classes(self, step: int, query_labels: list[np.ndarray]) -> list[int]:
        """Each query's training class: one of its labels among the step's ways (-1: none is), drawn from
        ``(seed, step, i)`` (mmfewshot draws it with ``np.random`` in the RoI head)."""
        ways = set(self.ways_of(step))
        out = []
        for i, labels in enumerate(query_labels):
            present = sorted(set(int(x) for x in labels.tolist()) & ways)
            out.append(int(np.random.default_rng([self.seed, int(step), _QUERY_CLASS, i]).choice(present))
                       if present else -1)
        return out


class QueryAwareDataset(NWayKShotDataset):
    """mmfewshot's ``QueryAwareDataset`` (Attention-RPN's): per query image, its own support set: a class of the
    query (the positive way, drawn from ``(seed, step, i)``) then ``num_support_ways - 1`` other classes,
    ``num_support_shots`` instances each, from images other than the query where the class has any.

    Args: as :class:`NWayKShotDataset` (``num_support_ways`` default 2: a positive and a negative, as mmfewshot).

    Example::

        >>> recs = [{"labels": np.array([i % 3]), "ignore": np.array([False])} for i in range(9)]
        >>> ds = QueryAwareDataset(recs, ["a", "b", "c"], num_support_ways=2, num_support_shots=1, seed=0)
        >>> sets = ds.query_supports(0, [3, 4], [np.array([0]), np.array([1])])
        >>> [s[0][0] for s in sets], [s[0][1] in (3, 4) for s in sets]   # positive way first, from other images
        ([0, 1], [False, False])
    """

    def __init__(self, records: list[dict[str, Any]], class_names: list[str], num_support_ways: int | None = 2,
                 num_support_shots: int = 1, **kwargs: Any) -> None:
        super().__init__(records, class_names, num_support_ways, num_support_shots, **kwargs)

    def query_supports(self, step: int, query_records: list[int],
                       query_labels: list[np.ndarray]) -> list[list[tuple[int, int, int]]]:
        """Per query ``i`` (record index ``query_records[i]``, labels ``query_labels[i]``): its support instances
        ``(label, record index, box index)``, the positive way first.

        Raises:
            DataError: a query without a box (nothing to be aware of).
        """
        c = len(self.class_names)
        out = []
        for i, (rec, labels) in enumerate(zip(query_records, query_labels)):
            present = sorted(set(int(x) for x in labels.tolist()))
            if not present:
                raise DataError(f"query image at record {rec} has no box: QueryAwareDataset needs one of its classes")
            rng = np.random.default_rng([self.seed, int(step), _QUERY_CLASS, i])
            positive = int(rng.choice(present))
            others = [k for k in range(c) if k != positive]
            negatives = rng.choice(others, self.ways - 1, replace=False).tolist() if self.ways > 1 else []
            used: set[int] = set()
            out.append([(label, r, b) for label in [positive, *negatives]
                        for r, b in self._shots(rng, label, used, int(rec))])
        return out


#: ``data.query_support.type`` -> dataset class
QUERY_SUPPORT_DATASETS: dict[str, type] = {"NWayKShotDataset": NWayKShotDataset,
                                           "QueryAwareDataset": QueryAwareDataset}


def support_images(records: list[dict[str, Any]], instances: list[tuple[int, int, int]], pipeline) -> np.ndarray:
    """The support images ``(N, C, T, T)`` uint8 of ``(label, record index, box index)`` instances through the
    support pipeline (:func:`~fewray.data.detection.support_transforms.build_support_pipeline`).

    Raises:
        DataError: an unreadable image (naming it).
    """
    from fewray.data.detection.builder import decode_rgb

    decoded: dict[int, np.ndarray] = {}
    out = []
    for _, r, b in instances:
        if r not in decoded:
            rec = records[r]
            decoded[r] = decode_rgb(rec["image"], f"{rec.get('file_name')} (image {rec['image_id']})")
        out.append(pipeline(decoded[r], records[r]["boxes"][b]))
    return np.stack(out)


def support_set(records: list[dict[str, Any]], num_classes: int,
                num_used_support_shots: int | None = None) -> list[tuple[int, int, int]]:
    """Every support instance ``(label, record index, box index)`` of every class, class-major: what a detector's
    ``model_init`` averages its class vectors from (mmfewshot's ``model_init`` dataset).

    Example::

        >>> recs = [{"labels": np.array([1, 0]), "ignore": np.array([False, False])}]
        >>> support_set(recs, 2)
        [(0, 0, 1), (1, 0, 0)]
    """
    pools = instances_by_class(records, num_classes, num_used_support_shots)
    return [(label, r, b) for label, pool in enumerate(pools) for r, b in pool]


class QuerySupportBatchBuilder:
    """One training step's query batch and its supports, rebuilt from ``(seed, step)`` alone.

    Args:
        records (list[dict]): training records with image bytes (labels ``0..C-1``). class_names (list[str]).
        batch_size, seed, min_size, max_size, flip: the query batch (as
            :class:`~fewray.data.detection.builder.DetectionBatchBuilder`).
        query_support (dict): ``type`` (``NWayKShotDataset`` default, ``QueryAwareDataset``), the dataset's
            options and ``support_pipeline`` (a list of support transform configs).

    Returns (``__call__(step)``): the query batch's arrays (``img``, ``img_hw``, ``boxes``, ``labels``,
    ``image_id``) plus ``step`` int64 ``()``, ``support_img`` uint8 ``(G, W*K, C, T, T)`` (G = 1 shared by the
    queries for ``NWayKShotDataset``, G = B one set per query for ``QueryAwareDataset``), ``support_labels``
    int64 ``(G, W*K)`` and ``query_class`` int64 ``(B,)`` (each query's training class; the positive way for
    ``QueryAwareDataset``; -1: none).

    Raises:
        ConfigError: an unknown ``type`` or option, a bad support pipeline; DataError: as the datasets.

    Example::

        >>> from fewray.data.detection.training import example_catalog, training_records
        >>> recs = training_records(example_catalog(), "train", "ALL_CLASSES", {"num_novel_shots": 2})
        >>> b = QuerySupportBatchBuilder(recs, ["RBC", "WBC", "Platelets"], 2, 0, 64, 96, True,
        ...     {"num_support_shots": 2, "support_pipeline": [{"type": "GenerateMask", "target_size": 32}]})
        >>> row = b(0)
        >>> row["support_img"].shape, row["support_labels"].tolist(), row["query_class"].shape
        ((1, 6, 4, 32, 32), [[0, 0, 1, 1, 2, 2]], (2,))
    """

    def __init__(self, records: list[dict[str, Any]], class_names: list[str], batch_size: int, seed: int,
                 min_size: int, max_size: int, flip: bool, query_support: dict[str, Any]) -> None:
        from fewray.core.errors import ConfigError
        from fewray.data.detection.builder import DetectionBatchBuilder
        from fewray.data.detection.support_transforms import build_support_pipeline

        opts = dict(query_support)
        kind = opts.pop("type", "NWayKShotDataset")
        pipeline_cfg = opts.pop("support_pipeline", None) or [{"type": "CropResizeInstance"}]
        if kind not in QUERY_SUPPORT_DATASETS:
            raise ConfigError(f"data.query_support.type: unknown {kind!r} ({', '.join(QUERY_SUPPORT_DATASETS)})")
        try:
            self.dataset = QUERY_SUPPORT_DATASETS[kind](records, class_names, seed=seed, **opts)
        except TypeError as exc:
            raise ConfigError(f"data.query_support: {kind}: {exc}") from None
        self.query_aware = isinstance(self.dataset, QueryAwareDataset)
        self.pipeline = build_support_pipeline(pipeline_cfg)
        self.queries = DetectionBatchBuilder(records, batch_size, seed, min_size=min_size, max_size=max_size,
                                             flip=flip)
        self.records = records

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        """The row of step ``step`` (class docstring)."""
        step = int(step)
        row = self.queries(step)
        idx = self.queries.indices(step).tolist()
        labels = [self.records[i]["labels"][~self.records[i]["ignore"]] for i in idx]
        if self.query_aware:
            sets = self.dataset.query_supports(step, idx, labels)
            row["query_class"] = np.array([s[0][0] for s in sets], np.int64)
        else:
            sets = [self.dataset.supports(step)]
            row["query_class"] = np.array(self.dataset.query_classes(step, labels), np.int64)
        row["support_img"] = np.stack([support_images(self.records, s, self.pipeline) for s in sets])
        row["support_labels"] = np.array([[lab for lab, _, _ in s] for s in sets], np.int64)
        row["step"] = np.array(step, np.int64)
        return row
