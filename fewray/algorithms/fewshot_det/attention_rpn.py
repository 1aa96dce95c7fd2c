"""Attention-RPN: proposals and boxes conditioned on the supports of one class at a time, class-agnostic weights.

Fan, Zhuo, Tang, Tai, "Few-Shot Object Detection with Attention-RPN and Multi-Relation Detector", CVPR 2020
(https://arxiv.org/abs/1908.01998); mmfewshot's ``AttentionRPNDetector``, ``AttentionRPNHead``,
``MultiRelationRoIHead`` and ``MultiRelationBBoxHead``, here on an FPN detector:

- support features: a support crop (``CropResizeInstance``) through the backbone and FPN; per pyramid level its
  average-pooled vector is the attention kernel (a 1 x 1 depth-wise correlation: the query map re-weighted
  channel-wise) and the crop pooled as one 7 x 7 RoI is the support's RoI feature; both averaged over the shots;
- :class:`AttentionRPNHead`: torchvision's RPN on the attended query maps, so proposals are of the support's class;
- :class:`MultiRelationBBoxHead`: the global, local (depth-wise correlation) and patch relations of a query RoI and
  the support RoI, their two-way scores (background, the support's class) summed; boxes from the patch branch.

No weight is tied to a class: a detector trained on base classes detects new ones from their supports alone
(``model_init`` with any class names, :meth:`AttentionRPNDetector.set_classes`). Training pairs each query with its
own support set (``QueryAwareDataset``: the positive way, a class of the query, then negatives); the RPN learns on
the positive way, the RoI head on every way (a RoI is foreground when it matches a box of the way's class).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import boxes as box_ops

from fewray.algorithms.builder import DETECTORS
from fewray.algorithms.fewshot_det.query_support import QuerySupportDetector


class MultiRelationBBoxHead(nn.Module):
    """mmfewshot's ``MultiRelationBBoxHead``: query RoI features ``(R, C, 7, 7)`` against one support RoI feature
    ``(1, C, 7, 7)`` -> ``(scores (R, 2) [background, the support's class], deltas (R, 4))``.

    - global relation: both average-pooled, concatenated, two FCs with ReLU, a 2-way classifier;
    - local correlation: a shared 1 x 1 conv on both, the query convolved depth-wise by the support (a 7 x 7 kernel
      per channel), ReLU, a 2-way classifier;
    - patch relation: both concatenated along channels, 1 x 1 conv (to C / 4), 3 x 3 average pool, 3 x 3 conv,
      1 x 1 conv (to C), 3 x 3 average pool to 1 x 1, a 2-way classifier and the box regressor.

    Args:
        in_channels (int): C. local_correlation, global_relation (bool): use these branches (the patch relation
            always runs: it alone regresses boxes, as mmfewshot). roi_size (int): 7.

    Example::

        >>> head = MultiRelationBBoxHead(8)
        >>> scores, deltas = head(torch.rand(5, 8, 7, 7), torch.rand(1, 8, 7, 7))
        >>> tuple(scores.shape), tuple(deltas.shape)
        ((5, 2), (5, 4))
    """

    def __init__(self, in_channels: int, local_correlation: bool = True, global_relation: bool = True,
                 roi_size: int = 7) -> None:
        super().__init__()
        c, q = int(in_channels), max(1, int(in_channels) // 4)
        self.in_channels, self.roi_size = c, roi_size
        self.patch_relation_branch = nn.Sequential(
            nn.Conv2d(2 * c, q, 1, bias=False), nn.ReLU(inplace=True), nn.AvgPool2d(3, stride=1),
            nn.Conv2d(q, q, 3, bias=False), nn.ReLU(inplace=True), nn.Conv2d(q, c, 1, bias=False),
            nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))
        self.patch_relation_fc_cls = nn.Linear(c, 2)
        self.patch_relation_fc_reg = nn.Linear(c, 4)
        self.local_correlation = local_correlation
        if local_correlation:
            self.local_correlation_branch = nn.Conv2d(c, c, 1, bias=False)
            self.local_correlation_fc_cls = nn.Linear(c, 2)
        self.global_relation = global_relation
        if global_relation:
            self.global_relation_branch = nn.Sequential(nn.Linear(2 * c, c), nn.ReLU(inplace=True), nn.Linear(c, c),
                                                        nn.ReLU(inplace=True))
            self.global_relation_fc_cls = nn.Linear(c, 2)
        nn.init.normal_(self.patch_relation_fc_reg.weight, std=0.001)
        nn.init.zeros_(self.patch_relation_fc_reg.bias)

    def global_score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """The global relation's scores ``(R, 2)``."""
        q, s = query.mean((2, 3)), support.mean((2, 3)).expand(query.shape[0], -1)
        return self.global_relation_fc_cls(self.global_relation_branch(torch.cat([q, s], 1)))

    def local_score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """The local correlation's scores ``(R, 2)``."""
        q, s = self.local_correlation_branch(query), self.local_correlation_branch(support)
        # (R, C, 1, 1) for equal sizes; divided by the kernel's area: a mean, not a sum, of the 49 products (FPN maps
        # are not ReLU'd res5 maps: a sum was large enough to diverge at the first steps)
        corr = F.conv2d(q, s.permute(1, 0, 2, 3), groups=q.shape[1]) / (s.shape[-1] * s.shape[-2])
        return self.local_correlation_fc_cls(F.relu(corr).flatten(1))

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores (R, 2), deltas (R, 4))`` (class docstring)."""
        patch = self.patch_relation_branch(torch.cat([query, support.expand_as(query)], 1)).flatten(1)
        scores = self.patch_relation_fc_cls(patch)
        if self.local_correlation:
            scores = scores + self.local_score(query, support)
        if self.global_relation:
            scores = scores + self.global_score(query, support)
        return scores, self.patch_relation_fc_reg(patch)


class AttentionRPNHead(RegionProposalNetwork):
    """mmfewshot's ``AttentionRPNHead``: torchvision's ``RegionProposalNetwork`` on query maps re-weighted
    channel-wise by a support kernel per image and level (a 1 x 1 depth-wise correlation).

    Built from a detector's RPN (:meth:`from_rpn`: the same anchors, head and settings; its weights keep their
    names, so a Faster R-CNN checkpoint's RPN loads). ``forward(images, features {level: (B, C, H, W)},
    kernels {level: (B, C)}, targets=None)`` -> torchvision's ``(proposals, losses)``.

    Example::

        >>> f = {"0": torch.ones(1, 2, 3, 3)}
        >>> AttentionRPNHead.attend(f, {"0": torch.tensor([[3., -1.]])})["0"][0, :, 0, 0].tolist()   # / mean |k| = 2
        [1.5, -0.5]
    """

    @classmethod
    def from_rpn(cls, rpn: RegionProposalNetwork) -> "AttentionRPNHead":
        """The attention RPN with ``rpn``'s anchor generator, head, matcher, sampler and NMS settings."""
        return cls(rpn.anchor_generator, rpn.head, rpn.proposal_matcher.high_threshold,
                   rpn.proposal_matcher.low_threshold, rpn.fg_bg_sampler.batch_size_per_image,
                   rpn.fg_bg_sampler.positive_fraction, dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n),
                   rpn.nms_thresh, rpn.score_thresh)

    @staticmethod
    def attend(features: "OrderedDict[str, torch.Tensor]", kernels: dict[str, torch.Tensor]
               ) -> "OrderedDict[str, torch.Tensor]":
        """Each level's query maps times its kernels ``(B, C)`` (broadcast over H, W), each kernel divided by its
        mean absolute value: the attended maps keep the query maps' scale, which the RPN head was trained on (FPN
        maps are signed and of any scale, unlike the ReLU'd res4 maps mmfewshot attends)."""
        out = OrderedDict()
        for k, f in features.items():
            kern = kernels[k]
            out[k] = f * (kern / kern.abs().mean(1, keepdim=True).clamp_min(1e-6))[:, :, None, None]
        return out

    def forward(self, images, features, kernels=None, targets=None):
        """Proposals of the attended maps (class docstring); without kernels, torchvision's RPN."""
        return super().forward(images, self.attend(features, kernels) if kernels is not None else features, targets)


class MultiRelationRoIHead(RoIHeads):
    """mmfewshot's ``MultiRelationRoIHead``: torchvision's ``RoIHeads`` (proposal sampling, box coding,
    post-processing) with a :class:`MultiRelationBBoxHead` on pooled RoI maps instead of shared FCs.

    Methods: ``pair_losses(features, proposals, image_sizes, targets, support_rois (B, C, 7, 7))`` -> the Fast
    R-CNN losses of one way (targets: the boxes of the way's class, label 1); ``class_detections(features, proposals,
    image_sizes, support_roi (C, 7, 7))`` -> per image ``(boxes (N, 4), scores (N,))`` of the support's class.
    """

    def pair_losses(self, features, proposals, image_sizes, targets, support_rois: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss_classifier, loss_box_reg)`` of one way over the batch (class docstring)."""
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        rois = self.box_roi_pool(features, proposals, image_sizes).split([len(p) for p in proposals])
        scores, deltas = zip(*(self.box_predictor(r, s[None]) for r, s in zip(rois, support_rois)))
        deltas = torch.cat(deltas)
        return fastrcnn_loss(torch.cat(scores), torch.cat([torch.zeros_like(deltas), deltas], 1), labels,
                             regression_targets)

    def class_detections(self, features, proposals, image_sizes, support_roi: torch.Tensor
                         ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image the boxes and foreground probabilities of the support's class (score threshold, small boxes
        removed, boxes clipped; NMS later, across classes)."""
        out = []
        rois = self.box_roi_pool(features, proposals, image_sizes).split([len(p) for p in proposals])
        for r, props, size in zip(rois, proposals, image_sizes):
            scores, deltas = self.box_predictor(r, support_roi[None])
            prob = F.softmax(scores, -1)[:, 1]
            boxes = box_ops.clip_boxes_to_image(self.box_coder.decode(deltas, [props]).reshape(-1, 4), size)
            keep = (prob > self.score_thresh) & ((boxes[:, 2] - boxes[:, 0]) >= 1e-2) & \
                   ((boxes[:, 3] - boxes[:, 1]) >= 1e-2)
            out.append((boxes[keep], prob[keep]))
        return out


@DETECTORS.register(name="AttentionRPNDetector")
class AttentionRPNDetector(QuerySupportDetector):
    """Attention-RPN with the multi-relation detector (module docstring) on :class:`FewShotFasterRCNN`'s parts.

    Args:
        local_correlation, global_relation (bool): :class:`MultiRelationBBoxHead`'s branches. Default True.
        support_channels (int): 3 (``CropResizeInstance`` crops). Others: :class:`FewShotFasterRCNN`'s (``head`` is
            not used: the multi-relation head replaces the predictor).

    Training: ``model(mode="train", images, targets, support_images (B, W*K, 3, T, T), support_labels (B, W*K),
    query_class (B,))`` (``QueryAwareDataset``: way 0 of query ``i`` is its class ``query_class[i]``) ->
    ``{"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}``.

    ``model_init(images, labels)`` keeps per class the kernels ``class_kernels (C, L, D)`` and the RoI feature
    ``class_rois (C, D, 7, 7)``; prediction runs the RPN and the head once per ready class, then per-class NMS.

    Example::

        >>> det = AttentionRPNDetector({"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]},
        ...                            class_names=["cat", "dog"], min_size=64, max_size=96, neck={"out_channels": 16})
        >>> sup = torch.rand(1, 2, 3, 32, 32)          # query 0: a cat support (way 0), a dog one (way 1)
        >>> losses = det(mode="train", images=[torch.rand(3, 64, 80)],
        ...              targets=[{"boxes": torch.tensor([[4., 4., 40., 50.]]), "labels": torch.tensor([1])}],
        ...              support_images=sup, support_labels=torch.tensor([[0, 1]]), query_class=torch.tensor([0]))
        >>> sorted(losses)
        ['loss_box_reg', 'loss_classifier', 'loss_objectness', 'loss_rpn_box_reg']
        >>> det.set_classes(["fish"]); det.model_init(torch.rand(3, 3, 32, 32), torch.tensor([0, 0, 0]))
        ['fish']
        >>> sorted(det(mode="predict", images=[torch.rand(3, 64, 80)])[0])
        ['boxes', 'labels', 'scores']
    """

    #: class vectors are replaced by per-level kernels and RoI maps; no weight is tied to a class
    class_buffers = ("class_kernels", "class_rois", "class_ready")
    #: from a Faster R-CNN base checkpoint: backbone, FPN and RPN load, the multi-relation head starts fresh
    fresh_modules = ("roi_heads.box_predictor.", *class_buffers)
    #: a base detector's kept supports (its base classes) are not the fine-tuned detector's: model_init fills them
    not_inherited = class_buffers

    def __init__(self, *args: Any, local_correlation: bool = True, global_relation: bool = True,
                 support_channels: int = 3, **kwargs: Any) -> None:
        self.relations = {"local_correlation": bool(local_correlation), "global_relation": bool(global_relation)}
        super().__init__(*args, support_channels=support_channels, with_meta_cls_loss=False, **kwargs)

    def _build_extras(self, loss_cfg: dict[str, Any]) -> None:
        old = self.roi_heads
        channels = self.backbone.out_channels
        self.roi_heads = MultiRelationRoIHead(
            old.box_roi_pool, nn.Identity(), MultiRelationBBoxHead(channels, **self.relations),
            old.proposal_matcher.high_threshold, old.proposal_matcher.low_threshold,
            old.fg_bg_sampler.batch_size_per_image, old.fg_bg_sampler.positive_fraction, old.box_coder.weights,
            old.score_thresh, old.nms_thresh, old.detections_per_img)
        self.rpn = AttentionRPNHead.from_rpn(self.rpn)
        self.meta_conv = None
        self._register_class_buffers(len(self.class_names))

    def _register_class_buffers(self, num_classes: int) -> None:
        d, levels = self.backbone.out_channels, len(self.roi_heads.box_roi_pool.featmap_names) + 1
        size = self.roi_heads.box_predictor.roi_size
        self.register_buffer("class_kernels", torch.zeros(num_classes, levels, d))
        self.register_buffer("class_rois", torch.zeros(num_classes, d, size, size))
        self.register_buffer("class_ready", torch.zeros(num_classes, dtype=torch.bool))

    def set_classes(self, class_names: list[str]) -> None:
        """Detect these classes from now on (their supports go to :meth:`model_init`); the kept supports are
        dropped. Any names: no weight depends on the classes."""
        self.class_names = list(class_names)
        device = self.class_ready.device
        self._register_class_buffers(len(self.class_names))
        self.to(device)

    def adapt_state_dict(self, state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
        """``state`` with a checkpoint's kept supports replaced by this model's empty ones when their class count
        differs (a checkpoint of other classes: ``model_init`` gives the new ones); called by fewray's checked
        loading and by ``load_state_dict``."""
        state = dict(state)
        for name in self.class_buffers:
            key = prefix + name
            if key in state and state[key].shape != getattr(self, name).shape:
                state[key] = getattr(self, name).clone()
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.update(self.adapt_state_dict({k: state_dict[k] for k in state_dict if k.startswith(prefix)},
                                                prefix))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def support_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kernels (N, L, D), RoI maps (N, D, 7, 7))`` of support crops ``(N, 3, T, T)`` floats in [0, 1].

        Raises:
            ValueError: not ``(N, 3, T, T)``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"support images must be (N, 3, T, T), got {tuple(images.shape)}")
        n, _, h, w = images.shape
        feats = self.backbone(images)
        kernels = torch.stack([f.mean((2, 3)) for f in feats.values()], 1)
        whole = [torch.tensor([[0.0, 0.0, float(w), float(h)]], device=images.device)] * n
        return kernels, self.roi_heads.box_roi_pool(feats, whole, [(h, w)] * n)

    @torch.no_grad()
    def model_init(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 16) -> list[str]:
        """Average and keep each class's kernels and RoI map over its supports (class docstring); returns the ready
        classes' names.

        Raises:
            ValueError: a label outside ``0..C-1`` (naming it); images not ``(N, 3, T, T)``.
        """
        parts = self.in_support_batches(self.support_features, images, labels, batch_size)
        kernels, rois = torch.cat([k for k, _ in parts]), torch.cat([r for _, r in parts])
        for buf in self.class_buffers:
            getattr(self, buf).zero_()
        for c in labels.unique().tolist():
            hit = labels == c
            self.class_kernels[c], self.class_rois[c] = kernels[hit].mean(0), rois[hit].mean(0)
            self.class_ready[c] = True
        return [self.class_names[c] for c in sorted(labels.unique().tolist())]

    def _kernels(self, kernels: torch.Tensor, names) -> dict[str, torch.Tensor]:
        return {name: kernels[:, i] for i, name in enumerate(names)}

    def _train_losses(self, images, targets, support_images, support_labels, query_class) -> dict[str, torch.Tensor]:
        b, s = support_images.shape[:2]
        if b != len(images):
            raise ValueError("AttentionRPNDetector trains on one support set per query (QueryAwareDataset): got "
                             f"{b} sets for {len(images)} queries")
        kernels, rois = self.support_features(support_images.flatten(0, 1))
        labels = support_labels
        ways = [0] + [j for j in range(1, s) if bool((labels[:, j] != labels[:, j - 1]).any())]
        bounds = ways + [s]
        images_t, targets_t = self.transform(images, targets)
        features = self.backbone(images_t.tensors)
        names = list(features.keys())
        kernels, rois = kernels.view(b, s, *kernels.shape[1:]), rois.view(b, s, *rois.shape[1:])
        losses: dict[str, torch.Tensor] = {}
        cls_losses, box_losses = [], []
        for w, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            way_class = labels[:, lo]
            way_targets = [{"boxes": t["boxes"][t["labels"] - 1 == c], "labels": torch.ones_like(
                t["labels"][t["labels"] - 1 == c])} for t, c in zip(targets_t, way_class.tolist())]
            proposals, rpn_losses = self.rpn(images_t, features, self._kernels(kernels[:, lo:hi].mean(1), names),
                                             targets=way_targets)
            if w == 0:  # the positive way (a class of each query): the RPN learns from it
                losses.update(rpn_losses)
            c_loss, b_loss = self.roi_heads.pair_losses(features, proposals, images_t.image_sizes, way_targets,
                                                        rois[:, lo:hi].mean(1))
            cls_losses.append(c_loss)
            box_losses.append(b_loss)
        losses["loss_classifier"] = torch.stack(cls_losses).mean()
        losses["loss_box_reg"] = torch.stack(box_losses).mean()
        return losses

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        sizes = [tuple(im.shape[-2:]) for im in images]
        images_t, _ = self.transform(images)
        features = self.backbone(images_t.tensors)
        names = list(features.keys())
        per_image: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in images]
        for c in torch.nonzero(self.class_ready).flatten().tolist():
            kernels = self._kernels(self.class_kernels[c][None].expand(len(images), -1, -1), names)
            proposals, _ = self.rpn(images_t, features, kernels)
            for i, (boxes, scores) in enumerate(self.roi_heads.class_detections(
                    features, proposals, images_t.image_sizes, self.class_rois[c])):
                per_image[i].append((boxes, scores, torch.full_like(scores, c + 1, dtype=torch.int64)))
        detections = []
        h = self.roi_heads
        for parts in per_image:
            boxes = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, 4)
            scores = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0)
            labels = torch.cat([p[2] for p in parts]) if parts else torch.zeros(0, dtype=torch.int64)
            keep = box_ops.batched_nms(boxes, scores, labels, h.nms_thresh)[:h.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return self.transform.postprocess(detections, images_t.image_sizes, sizes)
