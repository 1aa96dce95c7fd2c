"""Deterministic N-way K-shot Q-query episodes (mmfewshot's EpisodicDataset), defined by ``(seed, episode_id)``.

An episode is data, not a code path: a list of dataset indices drawn from a random
generator seeded with ``(seed, episode_id)``. Any worker can rebuild episode 1234 alone,
so meta-test results do not depend on how the tasks were split across workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fewray.core.errors import DataError


def torch_seed(*keys: int) -> int:
    """A torch seed derived from integer ``keys`` (e.g. ``(seed, batch_id)``, ``(seed, rank, step)``) the way the
    samplers here derive their numpy generators (``default_rng([seed, episode_id])``): the same keys give the same
    seed on any worker, different keys unrelated ones.

    Returns:
        int: in ``[0, 2**32)``, for ``torch.manual_seed``.

    Example:
        >>> torch_seed(0, 5) == torch_seed(0, 5) != torch_seed(0, 6)
        True
    """
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


@dataclass
class Episode:
    """Indices into a split and episode labels (remapped to ``0..N-1``, mmfewshot's ``label_wrapper``).

    Attributes:
        episode_id (int): the id it was drawn from.
        classes (np.ndarray): ``(N,)`` dataset class of each episode label.
        support_idx (np.ndarray): ``(N*K,)`` dataset indices, class-major (class 0's K shots first).
        support_label (np.ndarray): ``(N*K,)`` episode labels.
        query_idx (np.ndarray): ``(N*Q,)`` dataset indices, class-major.
        query_label (np.ndarray): ``(N*Q,)`` episode labels.
    """

    episode_id: int
    classes: np.ndarray
    support_idx: np.ndarray
    support_label: np.ndarray
    query_idx: np.ndarray
    query_label: np.ndarray


def label_wrapper(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Map dataset labels to episode labels: the position of each label in ``classes``."""
    lookup = {int(c): i for i, c in enumerate(classes)}
    return np.array([lookup[int(x)] for x in labels], dtype=np.int64)


class EpisodicSampler:
    """Draws N-way K-shot Q-query episodes from the labels of one split.

    Args:
        labels (np.ndarray): ``(M,)`` integer class of each image of the split.
        ways (int): N classes per episode.
        shots (int): K support images per class.
        queries (int): Q query images per class.
        seed (int): episode ``i`` is a pure function of ``(seed, i)``.

    Raises:
        DataError: ``ways`` greater than the classes of the split, or ``shots + queries``
            greater than the images of the smallest class.

    Example::

        >>> import numpy as np
        >>> from fewray.data.episodes import EpisodicSampler
        >>> labels = np.repeat(np.arange(10), 20)   # a split of 10 classes with 20 images each
        >>> sampler = EpisodicSampler(labels, ways=5, shots=1, queries=15, seed=0)
        >>> ep = sampler.episode(1234)   # identical on every worker
        >>> ep.support_idx.shape, ep.query_idx.shape
        ((5,), (75,))
        >>> np.array_equal(ep.query_idx, EpisodicSampler(labels, 5, 1, 15, seed=0).episode(1234).query_idx)
        True
        >>> sorted(set(ep.support_label.tolist()))   # episode labels are 0..ways-1
        [0, 1, 2, 3, 4]
    """

    def __init__(self, labels: np.ndarray, ways: int, shots: int, queries: int, seed: int = 0, split: str = "") -> None:
        labels = np.asarray(labels, dtype=np.int64)
        where = f" of split '{split}'" if split else ""
        classes, counts = np.unique(labels, return_counts=True)
        if ways > len(classes):
            raise DataError(f"ways={ways} is greater than the {len(classes)} classes{where}")
        need = shots + queries
        if need > counts.min():
            small = int(classes[counts.argmin()])
            raise DataError(
                f"shots + queries = {shots} + {queries} = {need} is greater than the {int(counts.min())} "
                f"images of class {small}{where}"
            )
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.classes = classes
        self._members = [order[s : s + c] for s, c in zip(starts, counts)]
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed

    def episode(self, episode_id: int) -> Episode:
        """Episode ``episode_id``: the same on every call and every machine."""
        rng = np.random.default_rng([self.seed, int(episode_id)])
        picked = rng.choice(len(self.classes), self.ways, replace=False)
        n, k, q = self.ways, self.shots, self.queries
        chosen = np.stack([rng.choice(self._members[c], k + q, replace=False) for c in picked])  # (N, K+Q)
        episode_labels = np.arange(n, dtype=np.int64)
        return Episode(
            episode_id=int(episode_id),
            classes=self.classes[picked],
            support_idx=chosen[:, :k].reshape(-1),
            support_label=np.repeat(episode_labels, k),
            query_idx=chosen[:, k:].reshape(-1),
            query_label=np.repeat(episode_labels, q),
        )


class EpochBatchSampler:
    """Shuffled batches of ``num_items`` items defined by ``(seed, batch id)``: batch ``b`` holds positions
    ``b*B .. b*B+B-1`` of an endless sequence of epochs, epoch ``e`` being the items in the order
    ``default_rng([seed, e]).permutation(num_items)``. Every item is seen once per epoch, and batch ``b`` is the
    same for any worker count or resume point (the pre-training and contrastive streams' sampler).

    Args:
        num_items (int): M, items to draw from (>= 1); batch_size (int): B (>= 1); seed (int): shuffling seed.

    Raises:
        ValueError: ``num_items`` or ``batch_size`` below 1.

    Example::

        >>> sampler = EpochBatchSampler(num_items=10, batch_size=4, seed=0)
        >>> batches = [sampler.indices(b) for b in range(5)]   # 20 positions: two epochs
        >>> sorted(np.concatenate(batches[:2]).tolist() + batches[2][:2].tolist()) == list(range(10))
        True
        >>> bool((EpochBatchSampler(10, 4, 0).indices(3) == batches[3]).all())   # any worker rebuilds it
        True
    """

    def __init__(self, num_items: int, batch_size: int, seed: int) -> None:
        if int(num_items) < 1 or int(batch_size) < 1:
            raise ValueError(f"num_items and batch_size must be >= 1, got {num_items} and {batch_size}")
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self._perms: dict[int, np.ndarray] = {}

    def indices(self, batch_id: int) -> np.ndarray:
        """Item indices ``(B,)`` of batch ``batch_id``."""
        m = self.num_items
        pos = int(batch_id) * self.batch_size + np.arange(self.batch_size)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in (int(e) for e in np.unique(pos // m)):
            if epoch not in self._perms:  # keep the previous epoch's order too: a batch may straddle two
                self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
                self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(m)
            sel = pos // m == epoch
            out[sel] = self._perms[epoch][pos[sel] % m]
        return out
