"""The builders that turn step ids into training rows: episodes for meta-training, labelled batches for pre-training.

Each is a callable class that Ray Data maps over a range of ids (:mod:`fewray.platform.streaming`); each loads its
split once and rebuilds row ``i`` from ``(seed, i)`` alone, so any number of Ray Train workers and any resume point
see the same rows. Plain Python and NumPy: no Ray here.

Episodic (ProtoNet, MatchingNet, RelationNet, MAML, MetaBaseline): one row per episode, fixed-shape columns

- ``episode_id`` ``()`` int64
- ``support_img`` ``(N*K, C, H, W)`` uint8, ``support_label`` ``(N*K,)`` int64
- ``query_img`` ``(N*Q, C, H, W)`` uint8, ``query_label`` ``(N*Q,)`` int64

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
