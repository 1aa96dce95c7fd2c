"""Ray Data streams of training episodes: episode ids in, support and query image batches out.

The dataset is ``ray.data.range(start, stop)`` of episode ids mapped by an
:class:`EpisodeBuilder` actor that decodes the split once and gathers each
episode's images. Each row is one episode with fixed-shape tensor columns:

- ``episode_id`` ``()`` int64
- ``support_img`` ``(N*K, C, H, W)`` uint8, ``support_label`` ``(N*K,)`` int64
- ``query_img`` ``(N*Q, C, H, W)`` uint8, ``query_label`` ``(N*Q,)`` int64

Ray Train splits the stream across its workers (``get_dataset_shard``).
"""

from __future__ import annotations

import numpy as np
import ray

from fewray.platform.data.catalog import load_split
from fewray.platform.data.episodes import EpisodicSampler


class EpisodeBuilder:
    """Ray Data callable class: episode ids -> episode image and label arrays.

    Args:
        root (str): catalog directory; split (str): catalog split; channels (int): 1 or 3;
        ways, shots, queries (int): the episode shape; seed (int): episode seed.
    """

    def __init__(self, root: str, split: str, channels: int, ways: int, shots: int, queries: int, seed: int) -> None:
        data = load_split(root, split, channels)
        self.images = data.images
        self.sampler = EpisodicSampler(data.labels, ways, shots, queries, seed, split)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Build the episodes of ``batch['id']``."""
        eps = [self.sampler.episode(int(i)) for i in batch["id"]]
        return {
            "episode_id": np.array([e.episode_id for e in eps], dtype=np.int64),
            "support_img": np.stack([self.images[e.support_idx] for e in eps]),
            "support_label": np.stack([e.support_label for e in eps]),
            "query_img": np.stack([self.images[e.query_idx] for e in eps]),
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
) -> "ray.data.Dataset":
    """A Ray Dataset of episodes ``start..stop-1`` (one row per episode, see the module docstring).

    Args:
        builder_cpus (float): CPUs reserved by the builder actor. Default 0: gathering an episode is
            array indexing, and the Ray Train workers may hold every CPU slot of a small machine.
    """
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # per-row bars cost CPU on small machines and spam logs
    return ray.data.from_items([{"id": i} for i in range(start, stop)]).map_batches(
        EpisodeBuilder,
        fn_constructor_kwargs=dict(
            root=root, split=split, channels=channels, ways=ways, shots=shots, queries=queries, seed=seed
        ),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=builder_cpus,
    )
