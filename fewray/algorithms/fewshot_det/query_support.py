"""The query-support detectors' base: a Faster R-CNN whose RoI head is conditioned on class vectors of supports.

mmfewshot's ``QuerySupportDetector``: training steps hold query images and support instances
(:mod:`fewray.data.detection.query_support`); before testing, ``model_init`` averages the support features of each
class (over every support instance it is given, mmfewshot's ``inference_support_dict``) and keeps them, here as
the buffers ``class_vectors (C, D)`` and ``class_ready (C,)``, so a checkpoint written after ``model_init``
carries them and every Ray task of an evaluation detects with the same vectors.

Support features: a support image ``(N, 3 or 4, T, T)`` (4: with ``GenerateMask``'s box mask, through
:class:`~fewray.algorithms.fewshot_det.meta_conv.MetaConv`) -> the backbone and FPN -> the whole image pooled as
one RoI (``MultiScaleRoIAlign``, 7 x 7) -> the shared FCs with a sigmoid on the last (mmfewshot's
``MetaRCNNResLayer.forward_support``: the shared res5 head then a sigmoid; here the FPN detector's two shared FCs)
-> ``(N, D)`` class vectors. The subclasses' RoI heads (:mod:`~fewray.algorithms.fewshot_det.meta_rcnn`) say how a
class vector and RoI features are aggregated.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.fewshot_det.faster_rcnn import FewShotFasterRCNN
from fewray.algorithms.fewshot_det.meta_conv import MetaConv, stem_conv
from fewray.core.errors import ConfigError


class QuerySupportDetector(FewShotFasterRCNN):
    """Base of Meta R-CNN and FSDetView: :class:`FewShotFasterRCNN` plus support features and ``model_init``.

    Args:
        support_channels (int): 3 (RGB supports) or 4 (RGB + box mask, :class:`MetaConv`); the task fills it from
            ``data.query_support.support_pipeline``. Default 3.
        with_meta_cls_loss (bool): Meta R-CNN's meta classification loss (``loss_meta_cls``: a linear classifier
            ``meta_cls`` of the support vectors over the C classes, cross-entropy). Default True.
        meta_cls_loss_weight (float): its weight. Default 1.0.
        **kwargs: :class:`FewShotFasterRCNN`'s.

    Training: ``model(mode="train", images, targets, support_images (G, S, C, T, T) floats in [0, 1],
    support_labels (G, S) in 0..C-1, query_class (B,))``: G = 1 (one support set for the batch) or B (one per
    query); ``query_class[i]`` (-1: none) picks the class vector query ``i`` is trained against (the mean of its
    group's supports of that class). Returns torchvision's four losses plus ``loss_meta_cls``.

    Prediction (``mode="predict"``) needs :meth:`model_init` first; a class without supports is never detected.

    Raises:
        ConfigError: ``support_channels`` not 3 or 4.
        RuntimeError (predict): no ``model_init`` yet.
    """

    train_task = "query_support_detection"
    #: started from a plain Faster R-CNN base checkpoint, these begin as initialised
    fresh_modules = ("meta_conv.", "roi_heads.aggregation_layer.", "roi_heads.meta_cls.", "class_vectors",
                     "class_ready")
    roi_heads_class: Any = None  # a subclass's MetaRCNNRoIHead

    def __init__(self, *args: Any, support_channels: int = 3, with_meta_cls_loss: bool = True,
                 meta_cls_loss_weight: float = 1.0, **kwargs: Any) -> None:
        if support_channels not in (3, 4):
            raise ConfigError(f"model.support_channels must be 3 (RGB) or 4 (RGB + box mask), got {support_channels}")
        self.support_channels = int(support_channels)
        self.with_meta_cls_loss, self.meta_cls_loss_weight = bool(with_meta_cls_loss), float(meta_cls_loss_weight)
        super().__init__(*args, **kwargs)

    def _build_extras(self, loss_cfg: dict[str, Any]) -> None:
        old = self.roi_heads
        self.roi_heads = self.roi_heads_class(
            old.box_roi_pool, old.box_head, old.box_predictor, old.proposal_matcher.high_threshold,
            old.proposal_matcher.low_threshold, old.fg_bg_sampler.batch_size_per_image,
            old.fg_bg_sampler.positive_fraction, old.box_coder.weights, old.score_thresh, old.nms_thresh,
            old.detections_per_img, **self.roi_head_kwargs())
        c, d = len(self.class_names), old.box_head.fc7.out_features
        if self.with_meta_cls_loss:
            self.roi_heads.meta_cls = nn.Linear(d, c)
        self.meta_conv = MetaConv(stem_conv(self.backbone.body)) if self.support_channels == 4 else None
        self.register_buffer("class_vectors", torch.zeros(c, d))
        self.register_buffer("class_ready", torch.zeros(c, dtype=torch.bool))

    def roi_head_kwargs(self) -> dict[str, Any]:
        """Extra arguments of the subclass's RoI head (its aggregation)."""
        return {}

    # ----------------------------------------------------------------------------------------------- supports
    def support_vectors(self, images: torch.Tensor) -> torch.Tensor:
        """Class vectors ``(N, D)`` of support images ``(N, support_channels, T, T)`` floats in [0, 1].

        Raises:
            ValueError: images of another channel count than ``support_channels``.
        """
        if images.dim() != 4 or images.shape[1] != self.support_channels:
            raise ValueError(f"support images must be (N, {self.support_channels}, T, T), got {tuple(images.shape)}")
        n, _, h, w = images.shape
        mask = images[:, 3:4] if self.support_channels == 4 else None
        if self.meta_conv is not None:
            with self.meta_conv.masking(mask):
                feats = self.backbone(images[:, :3])
        else:
            feats = self.backbone(images[:, :3])
        whole = [torch.tensor([[0.0, 0.0, float(w), float(h)]], device=images.device)] * n
        pooled = self.roi_heads.box_roi_pool(feats, whole, [(h, w)] * n).flatten(1)
        head = self.roi_heads.box_head
        return torch.sigmoid(head.fc7(F.relu(head.fc6(pooled))))

    @torch.no_grad()
    def process_support_images(self, images: torch.Tensor, labels: torch.Tensor,
                               batch_size: int = 16) -> dict[int, torch.Tensor]:
        """mmfewshot's ``process_support_images``: the mean class vector ``(D,)`` of each label of ``labels (N,)``
        over support images ``(N, C, T, T)``, in eval mode and batches of ``batch_size``.

        Raises:
            ValueError: as :meth:`support_vectors`; a label outside ``0..C-1`` (naming it).
        """
        vecs = torch.cat(self.in_support_batches(self.support_vectors, images, labels, batch_size))
        return {int(c): vecs[labels == c].mean(0) for c in labels.unique().tolist()}

    def in_support_batches(self, fn, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> list:
        """``fn`` over ``images`` in batches of ``batch_size``, in eval mode (restored after), once the labels are
        checked.

        Raises:
            ValueError: a label outside ``0..C-1`` (naming it).
        """
        bad = [int(x) for x in labels.tolist() if not 0 <= int(x) < len(self.class_names)]
        if bad:
            raise ValueError(f"support label {bad[0]} is not a class of this detector (0..{len(self.class_names) - 1})")
        was = self.training
        self.eval()
        try:
            return [fn(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        finally:
            self.train(was)

    @torch.no_grad()
    def model_init(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 16) -> list[str]:
        """Average and keep the class vectors of support images ``(N, C, T, T)`` with ``labels (N,)``
        (mmfewshot's ``model_init``): ``class_vectors`` / ``class_ready``; a class without a support is not
        ready (never detected). Returns the names of the ready classes.

        Raises:
            ValueError: as :meth:`process_support_images`.
        """
        means = self.process_support_images(images, labels, batch_size)
        self.class_vectors.zero_()
        self.class_ready.zero_()
        for c, v in means.items():
            self.class_vectors[c] = v
            self.class_ready[c] = True
        return [self.class_names[c] for c in sorted(means)]

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, images: list[torch.Tensor] | None = None, targets: list[dict[str, torch.Tensor]] | None = None,
                mode: str | None = None, support_images: torch.Tensor | None = None,
                support_labels: torch.Tensor | None = None, query_class: torch.Tensor | None = None):
        """``mode="train"`` with supports: the loss dict; ``mode="predict"``: detections with the kept class
        vectors (class docstring).

        Raises:
            ValueError: training without targets or supports; RuntimeError: predicting before ``model_init``.
        """
        if mode == "train":
            if targets is None or support_images is None or not self.training:
                raise ValueError("mode='train' needs targets, support_images, support_labels and query_class, and "
                                 "the model in training mode")
            return self._train_losses(images, targets, support_images, support_labels, query_class)
        if mode == "predict":
            if not bool(self.class_ready.any()):
                raise RuntimeError(f"{type(self).__name__}: call model_init(support images, labels) before predicting "
                                   f"(no class has a class vector)")
            was = self.training
            self.eval()
            with torch.no_grad():
                out = self._predict(images)
            self.train(was)
            return out
        raise ValueError(f"unknown mode {mode!r} (train, predict)")

    def _train_losses(self, images, targets, support_images, support_labels, query_class) -> dict[str, torch.Tensor]:
        g, s = support_images.shape[:2]
        vecs = self.support_vectors(support_images.flatten(0, 1)).view(g, s, -1)
        images_t, targets_t = self.transform(images, targets)
        features = self.backbone(images_t.tensors)
        proposals, losses = self.rpn(images_t, features, targets_t)
        per_query = []
        for i, c in enumerate(query_class.tolist()):
            group, labels = vecs[i if g > 1 else 0], support_labels[i if g > 1 else 0]
            hit = labels == c
            per_query.append(group[hit].mean(0) if c >= 0 and bool(hit.any()) else None)
        losses.update(self.roi_heads.train_losses(features, proposals, images_t.image_sizes, targets_t, per_query))
        if self.with_meta_cls_loss:
            logits = self.roi_heads.meta_cls(vecs.flatten(0, 1))
            losses["loss_meta_cls"] = self.meta_cls_loss_weight * F.cross_entropy(logits, support_labels.flatten())
        return losses

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        sizes = [tuple(im.shape[-2:]) for im in images]
        images_t, _ = self.transform(images)
        features = self.backbone(images_t.tensors)
        proposals, _ = self.rpn(images_t, features)
        ready = torch.nonzero(self.class_ready).flatten().tolist()
        detections = self.roi_heads.predict(features, proposals, images_t.image_sizes,
                                            {c: self.class_vectors[c] for c in ready})
        return self.transform.postprocess(detections, images_t.image_sizes, sizes)
