"""Ray Data streams of training rows: a range of step ids mapped, in order, by one builder actor.

The builders (:mod:`fewray.data.builders`, :mod:`fewray.data.multiview`, :mod:`fewray.data.multi_label`) say what
a row holds; this module makes them a Ray Dataset, which Ray Train splits across its workers
(``get_dataset_shard``).
"""

from __future__ import annotations

import ray

from fewray.data.builders import BatchBuilder, EpisodeBuilder

#: input blocks of a stream's ids, and the part of the cluster's object store its rows may hold ahead of training
#: (:func:`_id_stream`)
ID_BLOCKS = 8
STREAM_STORE_FRACTION = 0.8


def episode_dataset(
    root: str,
    split: str,
    channels: int,
    ways: int,
    shots: int,
    queries: int,
    seed: int,
    start: int,
    stop: int,
    builder_cpus: float = 0.0,
    augment: str = "none",
    image_size: int = 28,
    tasks_per_row: int = 1,
) -> "ray.data.Dataset":
    """A Ray Dataset of rows ``start..stop-1``: one episode per row, or ``tasks_per_row`` consecutive episodes
    stacked (a worker's share of a meta-batch; :class:`~fewray.data.builders.EpisodeBuilder`).

    Args:
        builder_cpus (float): CPUs reserved by the builder actor. Default 0: gathering an episode is
            array indexing, and the Ray Train workers may hold every CPU slot of a small machine.
        augment, image_size: the training augmentation preset and its output side.
    """
    return _id_stream(start, stop, EpisodeBuilder, builder_cpus, dict(
        root=root, split=split, channels=channels, ways=ways, shots=shots, queries=queries, seed=seed,
        augment=augment, image_size=image_size, tasks_per_row=tasks_per_row))


def batch_dataset(
    root: str, split: str, channels: int, batch_size: int, seed: int, start: int, stop: int,
    builder_cpus: float = 0.0, augment: str = "none", image_size: int = 28,
) -> "ray.data.Dataset":
    """A Ray Dataset of labelled batches ``start..stop-1`` (one row per batch, see :class:`BatchBuilder`)."""
    return _id_stream(start, stop, BatchBuilder, builder_cpus, dict(
        root=root, split=split, channels=channels, batch_size=batch_size, seed=seed, augment=augment,
        image_size=image_size))


def multiview_dataset(
    root: str, split: str, channels: int, batch_size: int, seed: int, start: int, stop: int,
    builder_cpus: float = 0.0, image_size: int | None = None,
) -> "ray.data.Dataset":
    """A Ray Dataset of two-view batches ``start..stop-1`` for contrastive pre-training (one row per batch,
    ``view1``/``view2`` uint8 ``(B, C, S, S)``; see :class:`fewray.data.multiview.MultiViewBuilder`)."""
    from fewray.data.multiview import MultiViewBuilder

    return _id_stream(start, stop, MultiViewBuilder, builder_cpus, dict(
        root=root, split=split, channels=channels, batch_size=batch_size, seed=seed, image_size=image_size))


def multi_label_dataset(
    root: str, split: str, batch_size: int, seed: int, start: int, stop: int, num_classes: int | None = None,
    builder_cpus: float = 0.0, augment: str = "none", image_size: int = 224,
) -> "ray.data.Dataset":
    """A Ray Dataset of multi-label batches ``start..stop-1`` (one row per batch, ``img`` uint8 ``(B, 3, S, S)``
    and ``gt_label`` int8 ``(B, C)``; see :class:`fewray.data.multi_label.MultiLabelBatchBuilder`)."""
    from fewray.data.multi_label import MultiLabelBatchBuilder

    return _id_stream(start, stop, MultiLabelBatchBuilder, builder_cpus, dict(
        root=root, split=split, batch_size=batch_size, seed=seed, num_classes=num_classes, augment=augment,
        image_size=image_size))


def detection_dataset(
    root: str, split: str, classes, few_shot: dict | None, batch_size: int, seed: int, start: int, stop: int,
    min_size: int = 288, max_size: int = 384, flip: bool = True, builder_cpus: float = 0.0,
    builder: type | None = None, **builder_kwargs,
) -> "ray.data.Dataset":
    """A Ray Dataset of detection batches ``start..stop-1`` (one row per step: ``img`` uint8 ``(B, 3, S, S)``,
    ``img_hw``, ``boxes`` ``(B, M, 4)``, ``labels`` ``(B, M)``, ``image_id``; see
    :class:`fewray.data.detection.training.DetectionStepBuilder`). ``builder``: another step builder of
    :mod:`fewray.data.detection.training` with the same first arguments (``QuerySupportStepBuilder``: plus the
    supports, ``query_support=``; ``MPSRStepBuilder``: plus the multi-scale crops, ``scales=``), its extra
    arguments in ``builder_kwargs``.

    Example::

        >>> ds = detection_dataset("data/coco_fsdet", "train", "BASE_CLASSES", None, 2, 0, 0, 100)  # doctest: +SKIP
        >>> next(ds.iter_batches(batch_size=1))["img"].shape                                        # doctest: +SKIP
        (1, 2, 3, 384, 384)
    """
    from fewray.data.detection.training import DetectionStepBuilder

    return _id_stream(start, stop, builder or DetectionStepBuilder, builder_cpus, dict(
        root=root, split=split, classes=classes, few_shot=few_shot, batch_size=batch_size, seed=seed,
        min_size=min_size, max_size=max_size, flip=flip, **builder_kwargs))


def _id_stream(start: int, stop: int, builder: type, builder_cpus: float, kwargs: dict) -> "ray.data.Dataset":
    """``ids start..stop-1`` mapped one by one, in order, by one ``builder`` actor.

    The ids go in a few large input blocks (at most :data:`ID_BLOCKS`), and the stream may lead training by most of
    the object store. Ray Data 2.60's scheduling loop does not wait when an operator is backpressured with outputs
    ready (py-spy on the SplitCoordinator: the loop itself), so it spins a whole core; with the default ~200 input
    blocks this started early (a 6000-id stream: 65-100% of a core, 3% with 8 blocks), and with a full budget it
    starts whenever rows are built faster than trained on (detection training 0.3-0.4 steps/s against 1.4).
    """
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # per-row bars cost CPU on small machines and spam logs
    # Once its budget is full, Ray Data 2.60's scheduling loop spins (outputs ready, reading them backpressured: no
    # wait), a whole core of a 2-core machine (measured: detection training 0.3-0.4 steps/s against 1.4 before the
    # budget filled). Rows are built faster than training takes them, so the budget is what a stream may run ahead:
    # give it most of the object store (Ray Data's default is a part of it).
    limits = ctx.execution_options.resource_limits
    store = ray.cluster_resources().get("object_store_memory", 0) if ray.is_initialized() else 0
    if store:
        ctx.execution_options.resource_limits = limits.copy(object_store_memory=int(STREAM_STORE_FRACTION * store))
    ctx.downstream_capacity_backpressure_ratio = None  # its own cap (~1.5 GiB here) would backpressure, and spin, first
    ids = [{"id": i} for i in range(start, stop)]
    return ray.data.from_items(ids, override_num_blocks=max(1, min(ID_BLOCKS, len(ids)))).map_batches(
        builder,
        fn_constructor_kwargs=kwargs,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=builder_cpus,
    )
