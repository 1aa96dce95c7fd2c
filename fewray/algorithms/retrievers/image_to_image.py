"""ImageToImageRetriever: rank gallery images by the cosine similarity of their features to a query's (mmpretrain)."""

# no ``from __future__ import annotations``: the registry validates config values against these annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.builder import BACKBONES, HEADS, RETRIEVERS
from fewray.algorithms.retrievers.base import BaseRetriever, check_topk, feature_matrix
from fewray.core.errors import ConfigError, DataError


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` cosine similarities of the rows of ``a`` ``(N, D)`` and ``b`` ``(P, D)`` (a zero row gives 0).

    Example::

        >>> cosine_similarity(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]))
        tensor([[ 1.,  0., -1.]])
    """
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


#: ``similarity_fn`` names: larger is more similar
SIMILARITY_FNS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine_similarity": cosine_similarity,
}


@RETRIEVERS.register
class ImageToImageRetriever(BaseRetriever):
    """Supervised image-to-image retrieval: a gallery ranked by the similarity of its features to a query's.

    mmpretrain's ``ImageToImageRetriever``
    (https://mmpretrain.readthedocs.io/en/latest/api/generated/mmpretrain.models.retrievers.ImageToImageRetriever.html)
    on plain PyTorch. The image encoder is any fewray backbone: the pretrained ones (``EfficientNetLite0``,
    ``TorchvisionResNet``) give pooled features ``(N, D)``; Conv4 gives its flattened last maps (``(N, 1600)``
    at 84x84); maps ``(N, C, h, w)`` of other encoders are flattened (:func:`~.base.feature_matrix`).

    Args:
        image_encoder (dict | nn.Module): a backbone config ``{type: Conv4, in_channels: 3}`` (built by
            :data:`~fewray.algorithms.BACKBONES`) or a module mapping images ``(N, C, H, W)`` to features.
        prototype (DataLoader | Iterable | dict | str | Path | Tensor | None): the gallery (see
            :class:`~.base.BaseRetriever`): a loader, a loader config, a features file or a ``(P, D)`` tensor.
        head (dict | nn.Module | None): a classification head used only by :meth:`loss` (training the encoder,
            e.g. mmpretrain's ``ArcFaceClsHead``: ``{type: ArcFaceClsHead, num_classes: C, in_channels: D}``);
            it must have ``forward_train(feats, labels) -> dict of losses``. None: :meth:`loss` is not
            available. Default None.
        similarity_fn (str | Callable): ``"cosine_similarity"`` (mmpretrain's only name; computed as normalised
            features multiplied, not mmpretrain's ``(N, P, D)`` broadcast), or a function
            ``f(query (N, D), gallery (P, D)) -> (N, P)``, larger = more similar. Default ``"cosine_similarity"``.
        topk (int): items :meth:`predict` returns per query; ``-1``: all. Default -1.
        data_preprocessor (Callable | None): see :class:`~.base.BaseRetriever`. Default None.

    Shapes:
        ``forward(images (N, C, H, W))`` -> features ``(N, D)``; ``matching(feats (N, D))`` -> ``(N, P)``;
        ``predict(images)`` -> ``{"score": (N, P), "pred_label": (N, k), "pred_score": (N, k)}``.

    Raises:
        ConfigError: an unknown ``similarity_fn`` name, a ``topk`` of 0 or below -1, a backbone or head config
            that does not build (naming the key).
        DataError (matching, predict): query features of another dimension than the prototype's, naming both
            (a prototype file of another encoder or image size).

    Example::

        >>> _ = torch.manual_seed(0)
        >>> gallery = torch.randint(0, 256, (6, 3, 28, 28), dtype=torch.uint8)
        >>> retriever = ImageToImageRetriever({"type": "Conv4", "in_channels": 3}, prototype=[gallery], topk=2)
        >>> out = retriever.predict(gallery[:3])
        >>> out["pred_label"][:, 0].tolist()   # each gallery image is its own nearest neighbour
        [0, 1, 2]
        >>> out["score"].shape, retriever.prototype_vecs.shape
        (torch.Size([3, 6]), torch.Size([6, 64]))
        >>> retriever.predict(gallery[:3], exclude=torch.arange(3))["pred_label"][:, 0].tolist() != [0, 1, 2]
        True
    """

    def __init__(
        self,
        image_encoder: dict[str, Any] | nn.Module,
        prototype: Any = None,
        head: dict[str, Any] | nn.Module | None = None,
        similarity_fn: str | Callable[..., Any] = "cosine_similarity",
        topk: int = -1,
        data_preprocessor: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(prototype=prototype, data_preprocessor=data_preprocessor)
        if isinstance(similarity_fn, str) and similarity_fn not in SIMILARITY_FNS:
            raise ConfigError(f"unknown similarity_fn '{similarity_fn}' (choose from {', '.join(SIMILARITY_FNS)}, "
                              f"or pass a function)")
        if not isinstance(similarity_fn, str) and not callable(similarity_fn):
            raise ConfigError(f"similarity_fn must be a name or a function, got {type(similarity_fn).__name__}")
        check_topk(topk, gallery_size=1 << 62)  # the gallery size is checked when ranking
        self.image_encoder = image_encoder if isinstance(image_encoder, nn.Module) else \
            BACKBONES.build(image_encoder, "model.image_encoder")
        self.head = head if head is None or isinstance(head, nn.Module) else HEADS.build(head, "model.head")
        self.similarity = similarity_fn
        self.topk = topk

    @property
    def similarity_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The function ``f(query (N, D), gallery (P, D)) -> (N, P)`` that :meth:`matching` uses."""
        return SIMILARITY_FNS[self.similarity] if isinstance(self.similarity, str) else self.similarity

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """Encoder features ``(N, D)`` of preprocessed images ``(N, C, H, W)`` (see :func:`~.base.feature_matrix`)."""
        return feature_matrix(self.image_encoder(inputs))

    def matching(self, inputs: torch.Tensor) -> torch.Tensor:
        """Similarities ``(N, P)`` of query features ``(N, D)`` to the prototype's ``(P, D)``.

        Raises:
            DataError: features of another dimension than the prototype's (naming both), or a similarity
                function that does not return ``(N, P)``.
        """
        if not self.prototype_inited:
            self.prepare_prototype()
        vecs = self.prototype_vecs
        if inputs.dim() != 2 or inputs.shape[1] != vecs.shape[1]:
            got = f"{inputs.shape[1]}-d" if inputs.dim() == 2 else f"shape {tuple(inputs.shape)}"
            raise DataError(f"{self._describe_prototype()} holds {vecs.shape[1]}-d features but the image encoder "
                            f"gives {got} features (a prototype of another encoder or image size?)")
        sim = self.similarity_fn(inputs.to(vecs.device), vecs)
        if tuple(sim.shape) != (inputs.shape[0], vecs.shape[0]):
            raise DataError(f"similarity_fn returned shape {tuple(sim.shape)}, expected "
                            f"{(inputs.shape[0], vecs.shape[0])}")
        return sim

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The head's losses of the encoder's features: ``head.forward_train(extract_feat(inputs), labels)``
        (mmpretrain's ``head.loss``), e.g. ``{"loss", "accuracy"}`` of an ``ArcFaceClsHead``.

        Args:
            inputs: preprocessed images ``(N, C, H, W)``; labels: ``(N,)`` class indices.

        Raises:
            NotImplementedError: the retriever has no head.
        """
        if self.head is None:
            raise NotImplementedError("ImageToImageRetriever has no head: loss needs one, e.g. "
                                      "head={'type': 'ArcFaceClsHead', 'num_classes': C, 'in_channels': D}")
        return self.head.forward_train(self.extract_feat(inputs), labels)
