"""Ray Data streams of training data: episodes for meta-training, labelled batches for pre-training.

Episodic (ProtoNet, MatchingNet, RelationNet, MAML, MetaBaseline): the dataset is a range of
episode ids mapped by an :class:`EpisodeBuilder` actor that decodes the split once and gathers each
episode's images. Each row is one episode with fixed-shape tensor columns:

- ``episode_id`` ``()`` int64
- ``support_img`` ``(N*K, C, H, W)`` uint8, ``support_label`` ``(N*K,)`` int64
- ``query_img`` ``(N*Q, C, H, W)`` uint8, ``query_label`` ``(N*Q,)`` int64

Plain batches (Baseline, Baseline++, NegMargin pre-training on all base classes): a range of step
ids mapped by a :class:`BatchBuilder`; each row is one shuffled labelled batch:

- ``batch_id`` ``()`` int64
- ``img`` ``(B, C, H, W)`` uint8, ``gt_label`` ``(B,)`` int64 (the split's class index, ``0..C-1``)

Multi-label batches (:func:`multi_label_dataset`, :class:`~fewray.platform.data.multi_label.MultiLabelBatchBuilder`)
are the same shuffled batches with ``gt_label`` ``(B, C)`` int8 rows of the multi-hot target matrix.

All apply the config's training augmentation (:mod:`fewray.platform.data.transforms`) per image,
seeded by the episode / batch id. Ray Train splits the stream across its workers (``get_dataset_shard``).
"""

from __future__ import annotations

import numpy as np
import ray

from fewray.platform.data.catalog import load_split
from fewray.platform.data.episodes import EpochBatchSampler, EpisodicSampler
from fewray.platform.data.transforms import Augmenter


class EpisodeBuilder:
    """Ray Data callable class: episode ids -> episode image and label arrays.

    Args:
        root (str): catalog directory; split (str): catalog split; channels (int): 1 or 3;
        ways, shots, queries (int): the episode shape; seed (int): episode seed;
        augment (str): training augmentation preset; image_size (int): its output side.
    """

    def __init__(self, root: str, split: str, channels: int, ways: int, shots: int, queries: int, seed: int,
                 augment: str = "none", image_size: int = 28) -> None:
        data = load_split(root, split, channels)
        self.images = data.images
        self.sampler = EpisodicSampler(data.labels, ways, shots, queries, seed, split)
        self.augment = Augmenter(augment, image_size, seed)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Build the episodes of ``batch['id']``."""
        eps = [self.sampler.episode(int(i)) for i in batch["id"]]
        return {
            "episode_id": np.array([e.episode_id for e in eps], dtype=np.int64),
            "support_img": np.stack([self.augment(self.images[e.support_idx], 2 * e.episode_id) for e in eps]),
            "support_label": np.stack([e.support_label for e in eps]),
            "query_img": np.stack([self.augment(self.images[e.query_idx], 2 * e.episode_id + 1) for e in eps]),
            "query_label": np.stack([e.query_label for e in eps]),
        }


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
) -> "ray.data.Dataset":
    """A Ray Dataset of episodes ``start..stop-1`` (one row per episode, see the module docstring).

    Args:
        builder_cpus (float): CPUs reserved by the builder actor. Default 0: gathering an episode is
            array indexing, and the Ray Train workers may hold every CPU slot of a small machine.
        augment, image_size: the training augmentation preset and its output side.
    """
    return _id_stream(start, stop, EpisodeBuilder, builder_cpus, dict(
        root=root, split=split, channels=channels, ways=ways, shots=shots, queries=queries, seed=seed,
        augment=augment, image_size=image_size))


class BatchBuilder:
    """Ray Data callable class: step ids -> shuffled labelled batches of a split (pre-training).

    Batch ``b`` holds positions ``b*B .. b*B+B-1`` of an endless sequence of epochs, epoch ``e`` being
    the split's images in the order ``default_rng([seed, e]).permutation(M)``: every image is seen once
    per epoch, and batch ``b`` is the same for any worker count or resume point.

    Args:
        root (str): catalog directory; split (str): catalog split; channels (int): 1 or 3;
        batch_size (int): B, images per batch; seed (int): shuffling seed;
        augment (str): training augmentation preset; image_size (int): its output side.
    """

    def __init__(self, root: str, split: str, channels: int, batch_size: int, seed: int,
                 augment: str = "none", image_size: int = 28) -> None:
        data = load_split(root, split, channels)
        self.images, self.labels = data.images, data.labels
        self.batch_size, self.seed = batch_size, seed
        self.augment = Augmenter(augment, image_size, seed)
        self.sampler = EpochBatchSampler(len(self.labels), batch_size, seed)

    def indices(self, batch_id: int) -> np.ndarray:
        """Dataset indices ``(B,)`` of batch ``batch_id`` (:class:`~fewray.platform.data.episodes.EpochBatchSampler`)."""
        return self.sampler.indices(batch_id)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Build the labelled batches of ``batch['id']``."""
        ids = [int(i) for i in batch["id"]]
        idx = [self.indices(i) for i in ids]
        return {
            "batch_id": np.array(ids, dtype=np.int64),
            "img": np.stack([self.augment(self.images[ix], i) for i, ix in zip(ids, idx)]),
            "gt_label": np.stack([self.labels[ix] for ix in idx]),
        }


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
    ``view1``/``view2`` uint8 ``(B, C, S, S)``; see :class:`fewray.platform.data.multiview.MultiViewBuilder`)."""
    from fewray.platform.data.multiview import MultiViewBuilder

    return _id_stream(start, stop, MultiViewBuilder, builder_cpus, dict(
        root=root, split=split, channels=channels, batch_size=batch_size, seed=seed, image_size=image_size))


def multi_label_dataset(
    root: str, split: str, batch_size: int, seed: int, start: int, stop: int, num_classes: int | None = None,
    builder_cpus: float = 0.0, augment: str = "none", image_size: int = 224,
) -> "ray.data.Dataset":
    """A Ray Dataset of multi-label batches ``start..stop-1`` (one row per batch, ``img`` uint8 ``(B, 3, S, S)``
    and ``gt_label`` int8 ``(B, C)``; see :class:`fewray.platform.data.multi_label.MultiLabelBatchBuilder`)."""
    from fewray.platform.data.multi_label import MultiLabelBatchBuilder

    return _id_stream(start, stop, MultiLabelBatchBuilder, builder_cpus, dict(
        root=root, split=split, batch_size=batch_size, seed=seed, num_classes=num_classes, augment=augment,
        image_size=image_size))


def _id_stream(start: int, stop: int, builder: type, builder_cpus: float, kwargs: dict) -> "ray.data.Dataset":
    """``ids start..stop-1`` mapped one by one, in order, by one ``builder`` actor."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # per-row bars cost CPU on small machines and spam logs
    return ray.data.from_items([{"id": i} for i in range(start, stop)]).map_batches(
        builder,
        fn_constructor_kwargs=kwargs,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=builder_cpus,
    )
