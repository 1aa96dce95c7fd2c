"""Two augmented views of every image, for contrastive self-supervised training (SimCLR); no Ray here.

:class:`MultiViewBuilder` is a Ray Data callable class like :class:`~fewray.data.builders.BatchBuilder`
(``map_batches(MultiViewBuilder, fn_constructor_kwargs=...)`` over a range of batch ids), usable without Ray
too. Each output row is one batch of ``B`` images seen twice:

- ``batch_id`` ``()`` int64
- ``view1`` ``(B, C, S, S)`` uint8, ``view2`` ``(B, C, S, S)`` uint8: row ``i`` of each is one augmentation of
  the same image (``S`` = ``image_size``, default the stored side)

Batch ``b`` holds the same images as BatchBuilder's batch ``b`` (shuffled epochs: every image once per epoch,
epoch ``e`` in the order ``default_rng([seed, e]).permutation(M)``); labels are not used. The augmentation
is SimCLR's (Chen et al., ICML 2020, https://arxiv.org/abs/2002.05709, appendix A), with
``torchvision.transforms.v2`` on uint8 tensors, drawn from torch's RNG re-seeded by ``(seed, batch id)`` on a
forked state: any worker rebuilds batch ``b`` bit for bit, whatever the worker count or resume point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from fewray.data.episodes import EpochBatchSampler, torch_seed
from fewray.core.errors import DataError

if TYPE_CHECKING:
    import torch


def simclr_transform(
    image_size: int | tuple[int, int],
    channels: int = 3,
    crop_scale: Sequence[float] = (0.08, 1.0),
    jitter_strength: float = 1.0,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """SimCLR's augmentation of one uint8 image ``(C, H, W)`` (``torchvision.transforms.v2``).

    ``RandomResizedCrop(image_size, scale=crop_scale)``, ``RandomHorizontalFlip()``, then for RGB images
    ``RandomApply([ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)], p=0.8)`` and ``RandomGrayscale(p=0.2)`` with
    ``s = jitter_strength`` (the paper's colour distortion of strength 1). A 1-channel image has no colour
    to distort: its pipeline is the crop and the flip. The paper's Gaussian blur (ImageNet only) is left out.

    Args:
        image_size (int | tuple[int, int]): output side (or ``(H, W)``).
        channels (int): 1 or 3. Default 3.
        crop_scale (tuple[float, float]): area fraction range of the crop. Default ``(0.08, 1.0)`` (the paper's).
        jitter_strength (float): ``s`` above, >= 0. Default 1.0.

    Raises:
        ValueError: ``channels`` not 1 or 3, a ``crop_scale`` outside ``0 < lo <= hi <= 1``, or ``s < 0``.

    Example::

        >>> import torch
        >>> t = simclr_transform(32, channels=3)
        >>> t(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
        torch.Size([3, 32, 32])
    """
    from torchvision.transforms import v2

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    lo, hi = (float(v) for v in crop_scale)
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(crop_scale)}")
    if jitter_strength < 0:
        raise ValueError(f"jitter_strength must be >= 0, got {jitter_strength}")
    ops: list = [v2.RandomResizedCrop(image_size, scale=(lo, hi), antialias=True), v2.RandomHorizontalFlip()]
    if channels == 3:
        s = jitter_strength
        ops += [v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
                v2.RandomGrayscale(p=0.2)]
    return v2.Compose(ops)


class MultiViewBuilder:
    """Ray Data callable class: batch ids -> two SimCLR views of each image of the batch (see the module docstring).

    Args:
        root (str): catalog directory; split (str): catalog split; channels (int): 1 or 3;
        batch_size (int): B, images per batch; seed (int): shuffling and augmentation seed;
        image_size (int | None): side of the views; None: the stored images' size. Default None.
        crop_scale, jitter_strength: see :func:`simclr_transform`.

    Raises:
        DataError: the catalog or split cannot be read (:func:`~fewray.data.catalog.load_split`),
            or the split holds no images.
        ValueError: ``batch_size < 1``, or a bad augmentation argument.

    Example (in memory, with :meth:`from_images`; Ray Data passes ``root``, ``split``, ... instead)::

        >>> import numpy as np
        >>> images = np.random.default_rng(0).integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
        >>> builder = MultiViewBuilder.from_images(images, batch_size=4, seed=0)
        >>> out = builder({"id": np.array([7])})
        >>> out["view1"].shape, out["view1"].dtype, out["batch_id"]
        ((1, 4, 3, 32, 32), dtype('uint8'), array([7]))
        >>> v1, v2 = builder.views(7)                     # the same batch, rebuilt
        >>> bool((v1 == out["view1"][0]).all()), bool((v1 != v2).any())
        (True, True)
    """

    def __init__(self, root: str, split: str, channels: int, batch_size: int, seed: int,
                 image_size: int | None = None, crop_scale: Sequence[float] = (0.08, 1.0),
                 jitter_strength: float = 1.0) -> None:
        from fewray.data.catalog import load_split, read_labels

        if len(read_labels(root, split)) == 0:  # before decoding (an empty split has nothing to stack)
            raise DataError(f"the {split} split of {root} has no images")
        images = load_split(root, split, channels).images
        self._setup(images, batch_size, seed, image_size, crop_scale, jitter_strength)

    @classmethod
    def from_images(cls, images: np.ndarray, batch_size: int, seed: int, image_size: int | None = None,
                    crop_scale: Sequence[float] = (0.08, 1.0), jitter_strength: float = 1.0) -> MultiViewBuilder:
        """A builder over ``images`` ``(M, C, H, W)`` uint8 in memory instead of a catalog split.

        Raises:
            ValueError: ``images`` not a non-empty ``(M, 1 or 3, H, W)`` uint8 array; the constructor's errors.
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8 or len(images) == 0 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be a non-empty (M, 1 or 3, H, W) uint8 array, got {images.dtype} "
                             f"{images.shape}")
        self = cls.__new__(cls)
        self._setup(images, batch_size, seed, image_size, crop_scale, jitter_strength)
        return self

    def _setup(self, images: np.ndarray, batch_size: int, seed: int, image_size: int | None,
               crop_scale: Sequence[float], jitter_strength: float) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images = images
        self.batch_size, self.seed = int(batch_size), int(seed)
        size = tuple(images.shape[2:]) if image_size is None else int(image_size)
        self.transform = simclr_transform(size, images.shape[1], crop_scale, jitter_strength)
        self.sampler = EpochBatchSampler(len(images), self.batch_size, self.seed)

    def indices(self, batch_id: int) -> np.ndarray:
        """Image indices ``(B,)`` of batch ``batch_id``: BatchBuilder's batch, the same
        :class:`~fewray.data.episodes.EpochBatchSampler`."""
        return self.sampler.indices(batch_id)

    def views(self, batch_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(view1, view2)``, each ``(B, C, S, S)`` uint8, of batch ``batch_id``."""
        import torch

        imgs = self.images[self.indices(batch_id)]
        first, second = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(self.seed, batch_id))
            for img in imgs:
                x = torch.from_numpy(np.ascontiguousarray(img))
                first.append(self.transform(x))
                second.append(self.transform(x))
        return torch.stack(first).numpy(), torch.stack(second).numpy()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The view pairs of the batches ``batch['id']``: ``{"batch_id", "view1", "view2"}`` (one row per id)."""
        ids = [int(i) for i in batch["id"]]
        pairs = [self.views(i) for i in ids]
        return {
            "batch_id": np.array(ids, dtype=np.int64),
            "view1": np.stack([p[0] for p in pairs]),
            "view2": np.stack([p[1] for p in pairs]),
        }
