"""The builders that turn step ids into training rows: episodes for meta-training, labelled batches for pre-training.

Each is a callable class that Ray Data maps over a range of ids (:mod:`fewray.platform.streaming`); each loads its
split once and rebuilds row ``i`` from ``(seed, i)`` alone, so any number of Ray Train workers and any resume point
see the same rows. Plain Python and NumPy: no Ray here.

Episodic (ProtoNet, MatchingNet, RelationNet, MAML, MetaBaseline): one row per episode, fixed-shape columns

- ``episode_id`` ``()`` int64
- ``support_img`` ``(N*K, C, H, W)`` uint8, ``support_label`` ``(N*K,)`` int64
- ``query_img`` ``(N*Q, C, H, W)`` uint8, ``query_label`` ``(N*Q,)`` int64

or, for meta-batches (``train.meta_batch_size``: a worker's share of a meta-update is ``k > 1`` tasks), one row per
``k`` consecutive episodes ``row*k .. row*k+k-1``: ``episode_id`` ``(k,)`` and every other column with a leading
``k`` (``support_img`` ``(k, N*K, C, H, W)``, ...).

Plain batches (Baseline, Baseline++, NegMargin, ArcFace pre-training on all base classes): one shuffled labelled
batch per row:

- ``batch_id`` ``()`` int64
- ``img`` ``(B, C, H, W)`` uint8, ``gt_label`` ``(B,)`` int64 (the split's class index, ``0..C-1``)

Both apply the config's training augmentation (:mod:`fewray.data.transforms`) per image, seeded by the id. The
multi-view (:mod:`fewray.data.multiview`) and multi-label (:mod:`fewray.data.multi_label`) builders follow the
same contract.
"""

from __future__ import annotations

import numpy as np

from fewray.data.catalog import load_split
from fewray.data.episodes import EpochBatchSampler, EpisodicSampler
from fewray.data.transforms import Augmenter


class EpisodeBuilder:
    """Ray Data callable class: row ids -> episode image and label arrays.

    Args:
        root (str): catalog directory; split (str): catalog split; channels (int): 1 or 3;
        ways, shots, queries (int): the episode shape; seed (int): episode seed;
        augment (str): training augmentation preset; image_size (int): its output side;
        tasks_per_row (int): 1: row ``i`` is episode ``i`` (columns as in the module docstring); ``k > 1``: row
            ``i`` stacks episodes ``i*k .. i*k+k-1`` (a leading ``(k,)`` on every column). Default 1.

    Raises:
        ValueError: ``tasks_per_row < 1``.
    """

    def __init__(self, root: str, split: str, channels: int, ways: int, shots: int, queries: int, seed: int,
                 augment: str = "none", image_size: int = 28, tasks_per_row: int = 1) -> None:
        if tasks_per_row < 1:
            raise ValueError(f"tasks_per_row must be >= 1, got {tasks_per_row}")
        data = load_split(root, split, channels)
        self.images = data.images
        self.sampler = EpisodicSampler(data.labels, ways, shots, queries, seed, split)
        self.augment = Augmenter(augment, image_size, seed)
        self.tasks_per_row = tasks_per_row

    def _episodes(self, ids: list[int]) -> dict[str, np.ndarray]:
        eps = [self.sampler.episode(i) for i in ids]
        return {
            "episode_id": np.array([e.episode_id for e in eps], dtype=np.int64),
            "support_img": np.stack([self.augment(self.images[e.support_idx], 2 * e.episode_id) for e in eps]),
            "support_label": np.stack([e.support_label for e in eps]),
            "query_img": np.stack([self.augment(self.images[e.query_idx], 2 * e.episode_id + 1) for e in eps]),
            "query_label": np.stack([e.query_label for e in eps]),
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Build the rows of ``batch['id']``."""
        k = self.tasks_per_row
        if k == 1:
            return self._episodes([int(i) for i in batch["id"]])
        rows = [self._episodes(list(range(int(i) * k, int(i) * k + k))) for i in batch["id"]]
        return {key: np.stack([r[key] for r in rows]) for key in rows[0]}


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
        """Dataset indices ``(B,)`` of batch ``batch_id`` (:class:`~fewray.data.episodes.EpochBatchSampler`)."""
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
