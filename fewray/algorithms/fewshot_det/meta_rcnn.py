"""Meta R-CNN and FSDetView: RoI features aggregated with one class vector at a time.

=============  ==============================================================================================
``MetaRCNN``   Yan et al., "Meta R-CNN: Towards General Solver for Instance-Level Low-Shot Learning", ICCV 2019
               (https://arxiv.org/abs/1909.13032): RoI features re-weighted channel-wise by the class vector
               (``DotProductAggregator``), then the box predictor
``FSDetView``  Xiao and Marlet, "Few-Shot Object Detection and Viewpoint Estimation for Objects in the Wild",
               ECCV 2020 (https://arxiv.org/abs/2007.12107): ``[fc(q * s), fc(q - s), q]`` concatenated
               (``DotProductAggregator`` and ``DifferenceAggregator`` with ``with_fc``), then the predictor
=============  ==============================================================================================

Training (mmfewshot's ``MetaRCNNRoIHead._bbox_forward_train``): each query image's sampled RoIs are aggregated with
the class vector of its training class and classified over all classes (background first), with torchvision's
Fast R-CNN losses. Testing (``simple_test_bboxes``): for every class ``c`` with a class vector, the RoIs aggregated
with it give class ``c``'s score and box deltas; the background score is the mean of the background scores of
all passes; then torchvision's post-processing (softmax, box decoding, per-class NMS).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from fewray.algorithms.builder import DETECTORS
from fewray.algorithms.fewshot_det.aggregation import AggregationLayer
from fewray.algorithms.fewshot_det.query_support import QuerySupportDetector

#: Meta R-CNN's aggregation (mmfewshot's config: a dot product, no fc)
META_RCNN_AGGREGATION = [{"type": "DotProductAggregator"}]


def fsdetview_aggregation(in_channels: int, out_channels: int | None = None) -> list[dict[str, Any]]:
    """FSDetView's aggregation configs: dot product and difference, each ``Linear -> BN -> ReLU`` to
    ``out_channels`` (default ``in_channels // 2``, mmfewshot's 2048 -> 1024).

    Example::

        >>> [c["type"] for c in fsdetview_aggregation(16)], fsdetview_aggregation(16)[0]["out_channels"]
        (['DotProductAggregator', 'DifferenceAggregator'], 8)
    """
    out = out_channels or in_channels // 2
    return [{"type": t, "in_channels": in_channels, "out_channels": out, "with_fc": True}
            for t in ("DotProductAggregator", "DifferenceAggregator")]


class MetaRCNNRoIHead(RoIHeads):
    """torchvision's ``RoIHeads`` conditioned on class vectors (module docstring; mmfewshot's ``MetaRCNNRoIHead``).

    Args:
        *args: those of ``RoIHeads``.
        aggregation_layer (list[dict]): aggregator configs (:class:`AggregationLayer`); Meta R-CNN uses the first
            output alone.

    Methods: ``aggregate(q (R, D), s (D,)) -> (R, D')``; ``train_losses(features, proposals, image_sizes, targets,
    per_query)`` (``per_query[i]``: image i's class vector or None) -> ``{"loss_classifier", "loss_box_reg"}``;
    ``predict(features, proposals, image_sizes, vectors {class index: (D,)})`` -> torchvision detections.

    Example::

        >>> from torchvision.ops import MultiScaleRoIAlign
        >>> from torchvision.models.detection.faster_rcnn import TwoMLPHead
        >>> from fewray.algorithms.fewshot_det.bbox_heads import Shared2FCBBoxHead
        >>> head = MetaRCNNRoIHead(MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(4 * 49, 8), Shared2FCBBoxHead(8, 2),
        ...     0.5, 0.5, 16, 0.25, None, 0.0, 0.5, 10, aggregation_layer=META_RCNN_AGGREGATION)
        >>> q, s = torch.tensor([[1., 2., 0., 0., 0., 0., 0., 3.]]), torch.tensor([2., .5, 1., 1., 1., 1., 1., 0.])
        >>> head.aggregate(q, s).tolist()
        [[2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """

    def __init__(self, *args: Any, aggregation_layer: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aggregation_layer = AggregationLayer(aggregation_layer or META_RCNN_AGGREGATION)

    def aggregate(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """Meta R-CNN: the first aggregator's output (``q * s``)."""
        return self.aggregation_layer(query, support.view(1, -1))[0]

    def _vectors(self, features, proposals, image_sizes) -> torch.Tensor:
        return self.box_head(self.box_roi_pool(features, proposals, image_sizes))

    def train_losses(self, features, proposals, image_sizes, targets,
                     per_query: list[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """Fast R-CNN losses of the queries with a training class (module docstring); zero (with gradients)
        when none has one."""
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        vectors = self._vectors(features, proposals, image_sizes).split([len(p) for p in proposals])
        logits, deltas, kept_labels, kept_targets = [], [], [], []
        for q, s, lab, reg in zip(vectors, per_query, labels, regression_targets):
            if s is None:
                continue
            cls, box = self.box_predictor(self.aggregate(q, s))
            logits.append(cls)
            deltas.append(box)
            kept_labels.append(lab)
            kept_targets.append(reg)
        if not logits:
            zero = sum(v.sum() for v in vectors) * 0.0
            return {"loss_classifier": zero, "loss_box_reg": zero}
        loss_cls, loss_box = fastrcnn_loss(torch.cat(logits), torch.cat(deltas), kept_labels, kept_targets)
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}

    def class_outputs(self, query: torch.Tensor, vectors: dict[int, torch.Tensor],
                      num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (R, C + 1), deltas (R, (C + 1) * 4))`` assembled from one pass per class vector: column
        ``c + 1`` from class ``c``'s pass, background the mean of the passes' (classes without a vector: -inf)."""
        r = query.shape[0]
        logits = query.new_full((r, num_classes + 1), float("-inf"))
        deltas = query.new_zeros((r, (num_classes + 1) * 4))
        background = query.new_zeros(r)
        for c, s in vectors.items():
            cls, box = self.box_predictor(self.aggregate(query, s))
            logits[:, c + 1] = cls[:, c + 1]
            deltas[:, (c + 1) * 4:(c + 2) * 4] = box[:, (c + 1) * 4:(c + 2) * 4]
            background += cls[:, 0]
        logits[:, 0] = background / max(1, len(vectors))
        return logits, deltas

    def predict(self, features, proposals, image_sizes, vectors: dict[int, torch.Tensor]) -> list[dict[str, Any]]:
        """Detections per image (torchvision's ``boxes``, ``scores``, ``labels`` in 1..C)."""
        num_classes = self.box_predictor.cls_score.out_features - 1
        logits, deltas = self.class_outputs(self._vectors(features, proposals, image_sizes), vectors, num_classes)
        boxes, scores, labels = self.postprocess_detections(logits, deltas, proposals, image_sizes)
        return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)]


class FSDetViewRoIHead(MetaRCNNRoIHead):
    """FSDetView's RoI head (mmfewshot's ``FSDetViewRoIHead``): ``[agg_1(q, s), ..., agg_n(q, s), q]``
    concatenated (FSDetView: ``fc(q * s)``, ``fc(q - s)``, ``q``).

    Example::

        >>> from torchvision.ops import MultiScaleRoIAlign
        >>> from torchvision.models.detection.faster_rcnn import TwoMLPHead
        >>> from fewray.algorithms.fewshot_det.bbox_heads import Shared2FCBBoxHead
        >>> head = FSDetViewRoIHead(MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(4 * 49, 8), Shared2FCBBoxHead(16, 2),
        ...     0.5, 0.5, 16, 0.25, None, 0.0, 0.5, 10,
        ...     aggregation_layer=[{"type": "DotProductAggregator"}, {"type": "DifferenceAggregator"}])
        >>> head.aggregate(torch.tensor([[1., 2.]]), torch.tensor([3., 1.])).tolist()
        [[3.0, 2.0, -2.0, 1.0, 1.0, 2.0]]
    """

    def aggregate(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """``[agg_1, ..., agg_n, q]`` along channels."""
        return torch.cat([*self.aggregation_layer(query, support.view(1, -1)), query], dim=1)


@DETECTORS.register(name="MetaRCNN")
class MetaRCNN(QuerySupportDetector):
    """Meta R-CNN (module docstring): a :class:`QuerySupportDetector` with 4-channel supports (RGB + box mask,
    ``GenerateMask``) through :class:`~fewray.algorithms.fewshot_det.meta_conv.MetaConv`, class vectors re-weighting
    RoI features (``q * s``) and the meta classification loss.

    Args:
        aggregation_layer (list[dict] | None): default ``[{type: DotProductAggregator}]``.
        support_channels (int): default 4. Others: :class:`QuerySupportDetector`'s and :class:`FewShotFasterRCNN`'s.

    Example::

        >>> det = MetaRCNN({"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]},
        ...                class_names=["cat", "dog"], min_size=64, max_size=96, representation_size=32)
        >>> sup = torch.rand(1, 4, 4, 32, 32)                        # one support set: 4 instances
        >>> losses = det(mode="train", images=[torch.rand(3, 64, 80)],
        ...              targets=[{"boxes": torch.tensor([[4., 4., 40., 50.]]), "labels": torch.tensor([2])}],
        ...              support_images=sup, support_labels=torch.tensor([[0, 0, 1, 1]]), query_class=torch.tensor([1]))
        >>> sorted(losses)
        ['loss_box_reg', 'loss_classifier', 'loss_meta_cls', 'loss_objectness', 'loss_rpn_box_reg']
        >>> det.model_init(sup[0], torch.tensor([0, 0, 1, 1])), tuple(det.class_vectors.shape)
        (['cat', 'dog'], (2, 32))
        >>> sorted(det(mode="predict", images=[torch.rand(3, 64, 80)])[0])
        ['boxes', 'labels', 'scores']
    """

    roi_heads_class = MetaRCNNRoIHead

    def __init__(self, *args: Any, aggregation_layer: list[dict[str, Any]] | None = None, support_channels: int = 4,
                 **kwargs: Any) -> None:
        self.aggregation_cfg = list(aggregation_layer or META_RCNN_AGGREGATION)
        super().__init__(*args, support_channels=support_channels, **kwargs)

    def roi_head_kwargs(self) -> dict[str, Any]:
        return {"aggregation_layer": self.aggregation_cfg}


@DETECTORS.register(name="FSDetView")
class FSDetView(MetaRCNN):
    """FSDetView (module docstring): Meta R-CNN's supports and class vectors, RoI features aggregated as
    ``[fc(q * s), fc(q - s), q]`` (:class:`FSDetViewRoIHead`); the predictor's input is ``D + 2 * D / 2``.

    Args:
        aggregation_layer (list[dict] | None): default :func:`fsdetview_aggregation` of the shared FCs' width.
        Others: :class:`MetaRCNN`'s.

    Example::

        >>> det = FSDetView({"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]},
        ...                 class_names=["cat", "dog"], min_size=64, max_size=96, representation_size=32)
        >>> det.roi_heads.box_predictor.cls_score.in_features, type(det.roi_heads).__name__
        (64, 'FSDetViewRoIHead')
    """

    roi_heads_class = FSDetViewRoIHead

    def __init__(self, *args: Any, aggregation_layer: list[dict[str, Any]] | None = None,
                 representation_size: int = 1024, **kwargs: Any) -> None:
        super().__init__(*args, aggregation_layer=aggregation_layer or fsdetview_aggregation(representation_size),
                         representation_size=representation_size, **kwargs)

    def predictor_in_channels(self, representation_size: int) -> int:
        """The shared FCs' width plus each aggregator's output width (``with_fc``) or the shared FCs' width."""
        return representation_size + sum(int(c.get("out_channels") or representation_size) if c.get("with_fc")
                                         else representation_size for c in self.aggregation_cfg)
