"""Faster R-CNN on torchvision's parts, and the two fine-tuning detectors built on it: TFA and FSCE.

``model.type`` names one of :data:`DETECTORS`:

=================  ===========================================================================================
``FasterRCNN``     base training (Ren et al., NeurIPS 2015, https://arxiv.org/abs/1506.01497) on the base classes
``TFA``            Wang et al., ICML 2020 (https://arxiv.org/abs/2003.06957): surgery from the base detector, all
                   but the last layer (the predictor) frozen, fine-tuned on a balanced K-shot set
``FSCE``           Sun et al., CVPR 2021 (https://arxiv.org/abs/2103.05950): surgery, backbone frozen, FPN / RPN /
                   RoI head fine-tuned with the contrastive proposal encoding loss
=================  ===========================================================================================
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from fewray.algorithms.builder import DETECTORS, LOSSES
from fewray.algorithms.fewshot_det.bbox_heads import BBOX_HEADS
from fewray.algorithms.fewshot_det.fpn_backbone import FPNBackbone
from fewray.algorithms.fewshot_det.surgery import apply_surgery, surgery_name
from fewray.core.errors import CheckpointError, ConfigError

#: ``model.rpn`` keys -> torchvision's ``FasterRCNN`` arguments
RPN_KEYS = {"pre_nms_top_n_train": "rpn_pre_nms_top_n_train", "pre_nms_top_n_test": "rpn_pre_nms_top_n_test",
            "post_nms_top_n_train": "rpn_post_nms_top_n_train", "post_nms_top_n_test": "rpn_post_nms_top_n_test",
            "nms_thresh": "rpn_nms_thresh", "fg_iou_thresh": "rpn_fg_iou_thresh", "bg_iou_thresh":
            "rpn_bg_iou_thresh", "batch_size_per_image": "rpn_batch_size_per_image", "positive_fraction":
            "rpn_positive_fraction", "score_thresh": "rpn_score_thresh"}
#: ``model.roi`` keys -> torchvision's ``FasterRCNN`` arguments
ROI_KEYS = {"score_thresh": "box_score_thresh", "nms_thresh": "box_nms_thresh", "detections_per_img":
            "box_detections_per_img", "fg_iou_thresh": "box_fg_iou_thresh", "bg_iou_thresh": "box_bg_iou_thresh",
            "batch_size_per_image": "box_batch_size_per_image", "positive_fraction": "box_positive_fraction"}
#: mmfewshot's ``frozen_parameters`` names -> this detector's module names
FROZEN_ALIASES = {"neck": "backbone.fpn", "rpn_head": "rpn", "roi_head.bbox_head.shared_fcs": "roi_heads.box_head",
                  "shared_fcs": "roi_heads.box_head", "roi_head.bbox_head": "roi_heads.box_predictor",
                  "backbone": "backbone.body"}


def _mapped(section: dict[str, Any], keys: dict[str, str], where: str) -> dict[str, Any]:
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise ConfigError(f"unknown config key '{where}.{unknown[0]}' (known: {', '.join(keys)})")
    return {keys[k]: v for k, v in section.items()}


def load_detector_checkpoint(path: str, what: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(state dict, class names)`` of a fewray detector checkpoint (a ``checkpoint.pt``, its directory or a
    ``train_result.json``).

    Raises:
        CheckpointError: missing or unreadable, or not a detector's checkpoint (naming ``what`` and the path).

    Example::

        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/checkpoint.pt"
        >>> torch.save({"model": {"w": torch.zeros(1)}, "config": {"model": {"class_names": ["cat"]}}}, path)
        >>> load_detector_checkpoint(path, "model.init_from")[1]
        ['cat']
    """
    from fewray.algorithms.utils.weights import load_weights

    state = load_weights(path)
    model_cfg = ((state.get("config") or {}).get("model") or {}) if isinstance(state, dict) else {}
    if "model" not in state or "class_names" not in model_cfg:
        kind = model_cfg.get("type", "not a fewray checkpoint")
        raise CheckpointError(f"{what} {path} is not a detector checkpoint ({kind}): it names no class_names")
    return state["model"], list(model_cfg["class_names"])


@DETECTORS.register(name="FasterRCNN")
class FewShotFasterRCNN(FasterRCNN):
    """Faster R-CNN with an FPN from torchvision's parts, as fewray's runtime and mmfewshot's configs use it.

    ``FPNBackbone`` -> ``AnchorGenerator`` (one size per pyramid level, 3 aspect ratios) and torchvision's RPN ->
    ``MultiScaleRoIAlign`` (7x7, sampling ratio 2) -> two shared FCs (``TwoMLPHead``, 1024) -> the predictor of
    ``head`` (:mod:`fewray.algorithms.fewshot_det.bbox_heads`). Images are floats in [0, 1], resized by
    torchvision's transform to ``min_size`` / ``max_size`` (no normalisation there: the backbone standardises
    its input itself); boxes come back in the input image's pixels.

    Args:
        backbone (dict): a :data:`BACKBONES` config with ``out_indices`` (default EfficientNet-Lite0's ImageNet
            weights, stages 2, 4, 6).
        head (dict): the predictor, ``{type: Shared2FCBBoxHead}`` (default), ``CosineSimBBoxHead`` (``scale``) or
            ``ContrastiveBBoxHead``.
        class_names (list[str]): the classes predicted, label ``i`` = ``class_names[i]`` (the training task fills it
            from ``data.classes``).
        neck (dict): ``{out_channels: 128}`` of the FPN.
        min_size, max_size (int): the resize rule (short side ``min_size`` unless the long side passes ``max_size``).
        anchor_sizes (list[int]): one anchor size per pyramid level (pixels, len = levels). aspect_ratios: h/w.
        rpn (dict): RPN settings, names of :data:`RPN_KEYS` (``post_nms_top_n_train``, ...).
        roi (dict): RoI settings, names of :data:`ROI_KEYS` (``batch_size_per_image``, ``score_thresh``, ...).
        representation_size (int): the shared FCs' width (1024).
        frozen_parameters (list[str]): name prefixes whose parameters get no gradient (``backbone``, ``neck``,
            ``rpn``, ``roi_heads.box_head``; mmfewshot's ``rpn_head``, ``roi_head.bbox_head.shared_fcs`` accepted).
        init_from (str | None): a base detector checkpoint to start from by :mod:`surgery` (TFA).
        surgery (str | None): ``random_init`` (``randinit``), ``combine`` or ``remove``; with ``init_from``.
        init_from_novel (str | None): the novel detector for ``combine``.

    Training: ``model(mode="train", images=[(3, H, W), ...], targets=[{"boxes": (M, 4) x1, y1, x2, y2 pixels,
    "labels": (M,) in 1..C}, ...])`` -> ``{"loss_classifier", "loss_box_reg", "loss_objectness",
    "loss_rpn_box_reg"}`` (FSCE adds ``loss_contrast``). Prediction: ``model(mode="predict", images=[...])`` ->
    per image ``{"boxes": (N, 4), "scores": (N,), "labels": (N,) in 1..C}`` (torchvision's; 0 is background).

    Raises:
        ConfigError: an unknown key of ``rpn`` / ``roi`` / ``head``, a ``frozen_parameters`` prefix matching no
            parameter, ``anchor_sizes`` not one per level, no ``class_names``, a surgery without ``init_from``.
        CheckpointError: ``init_from`` missing, not a detector's, or of another architecture (naming the key).

    Example::

        >>> det = FewShotFasterRCNN({"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]},
        ...                         class_names=["cat", "dog"], min_size=64, max_size=96)
        >>> losses = det(mode="train", images=[torch.rand(3, 64, 80)],
        ...              targets=[{"boxes": torch.tensor([[4., 4., 40., 50.]]), "labels": torch.tensor([2])}])
        >>> sorted(losses)
        ['loss_box_reg', 'loss_classifier', 'loss_objectness', 'loss_rpn_box_reg']
        >>> out = det.eval()(mode="predict", images=[torch.rand(3, 64, 80)])
        >>> sorted(out[0]), out[0]["boxes"].shape[1]
        (['boxes', 'labels', 'scores'], 4)
    """

    train_task = "detection"
    init_file_args = ("init_from", "init_from_novel")
    #: arguments that only matter when the weights do not come from a checkpoint (dropped with ``for_checkpoint``)
    init_only_args = ("surgery",)
    roi_heads_class: Any = None  # FSCE: its ContrastiveRoIHead
    #: key fragments of modules a base checkpoint may lack (kept as initialised by the surgery)
    fresh_modules: tuple[str, ...] = ()
    #: state keys ``init_from`` never copies (kept supports of another class set: ``model_init`` recomputes them)
    not_inherited: tuple[str, ...] = ()

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        head: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        neck: dict[str, Any] | None = None,
        min_size: int = 288,
        max_size: int = 384,
        anchor_sizes: list[int] | None = None,
        aspect_ratios: list[float] | None = None,
        rpn: dict[str, Any] | None = None,
        roi: dict[str, Any] | None = None,
        representation_size: int = 1024,
        frozen_parameters: list[str] | None = None,
        init_from: str | None = None,
        surgery: str | None = None,
        init_from_novel: str | None = None,
        loss_contrast: dict[str, Any] | None = None,
    ) -> None:
        if not class_names:
            raise ConfigError("config key 'model.class_names' is missing: the classes the detector predicts "
                              "(the training task fills it from data.classes)")
        backbone = backbone or {"type": "EfficientNetLite0", "pretrained": True, "out_indices": [2, 4, 6]}
        head = dict(head or {"type": "Shared2FCBBoxHead"})
        if head.get("type") not in BBOX_HEADS:
            raise ConfigError(f"model.head: a detector's head is a bbox head ({', '.join(BBOX_HEADS.list())}), "
                              f"got {head.get('type')!r}")
        body = FPNBackbone(backbone, **(neck or {}))
        levels = len(body.body.out_channels) + 1  # + the max-pooled level
        anchor_sizes = list(anchor_sizes or [32, 64, 128, 256, 512][:levels])
        if len(anchor_sizes) != levels:
            raise ConfigError(f"model.anchor_sizes has {len(anchor_sizes)} sizes; the pyramid has {levels} levels")
        ratios = tuple(aspect_ratios or (0.5, 1.0, 2.0))
        anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), (ratios,) * levels)
        names = [str(i) for i in range(levels - 1)]
        roi_pool = MultiScaleRoIAlign(names, 7, 2)
        box_head = TwoMLPHead(body.out_channels * 49, representation_size)
        predictor = BBOX_HEADS.build({**head, "in_channels": self.predictor_in_channels(representation_size),
                                      "num_classes": len(class_names)}, "model.head")
        super().__init__(body, num_classes=None, min_size=min_size, max_size=max_size, image_mean=[0.0] * 3,
                         image_std=[1.0] * 3, rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=box_head,
                         box_predictor=predictor, **_mapped(rpn or {}, RPN_KEYS, "model.rpn"),
                         **_mapped(roi or {}, ROI_KEYS, "model.roi"))
        self.class_names = list(class_names)
        self._build_extras(loss_contrast or {})
        if surgery is not None and init_from is None:
            raise ConfigError("model.surgery needs model.init_from (the base detector's checkpoint)")
        if init_from is not None:
            self._init_by_surgery(init_from, surgery_name(surgery or "random_init"), init_from_novel)
        self.frozen_parameters = list(frozen_parameters or [])
        self._freeze(self.frozen_parameters)

    def predictor_in_channels(self, representation_size: int) -> int:
        """The predictor's input width: the shared FCs' (a meta-learning detector's aggregation may change it)."""
        return representation_size

    def _build_extras(self, loss_cfg: dict[str, Any]) -> None:
        """Modules a subclass adds before the surgery copies weights (FSCE: its RoI head with the contrastive loss)."""
        if self.roi_heads_class is not None:
            self._swap_roi_heads(loss_cfg)

    def _swap_roi_heads(self, loss_cfg: dict[str, Any]) -> None:
        old = self.roi_heads
        loss = LOSSES.build({"type": "SupervisedContrastiveLoss", **loss_cfg}, "model.loss_contrast")
        self.roi_heads = self.roi_heads_class(
            old.box_roi_pool, old.box_head, old.box_predictor, old.proposal_matcher.high_threshold,
            old.proposal_matcher.low_threshold, old.fg_bg_sampler.batch_size_per_image,
            old.fg_bg_sampler.positive_fraction, old.box_coder.weights, old.score_thresh, old.nms_thresh,
            old.detections_per_img, loss_contrast=loss)

    def _init_by_surgery(self, init_from: str, method: str, init_from_novel: str | None) -> None:
        base, base_classes = load_detector_checkpoint(init_from, "model.init_from")
        base = {k: v for k, v in base.items() if not k.startswith(self.not_inherited)}
        novel = novel_classes = None
        if init_from_novel is not None:
            novel, novel_classes = load_detector_checkpoint(init_from_novel, "model.init_from_novel")
            novel = {k: v for k, v in novel.items() if not k.startswith(self.not_inherited)}
        try:
            state, self.surgery_copied = apply_surgery(self.state_dict(), self.class_names, base, base_classes,
                                                       method, novel, novel_classes, self.fresh_modules)
        except CheckpointError as exc:
            raise CheckpointError(f"model.init_from {init_from}: {exc}") from None
        self.load_state_dict(state)

    def _freeze(self, prefixes: list[str]) -> None:
        names = [n for n, _ in self.named_parameters()]
        for given in prefixes:
            prefix = FROZEN_ALIASES.get(given, given)
            hit = [n for n in names if n == prefix or n.startswith(prefix + ".")]
            if not hit:
                raise ConfigError(f"model.frozen_parameters: '{given}' matches no parameter (modules: backbone, "
                                  f"neck, rpn, roi_heads.box_head, roi_heads.box_predictor)")
            for n, p in self.named_parameters():
                if n in hit:
                    p.requires_grad_(False)

    def forward(self, images: list[torch.Tensor] | None = None, targets: list[dict[str, torch.Tensor]] | None = None,
                mode: str | None = None):
        """``mode="train"``: the loss dict; ``mode="predict"``: detections (see the class docstring); no
        ``mode``: torchvision's ``FasterRCNN.forward``.

        Raises:
            ValueError: ``mode="train"`` without targets or not in training mode; an unknown mode.
        """
        if mode is None:
            return super().forward(images, targets)
        if mode == "train":
            if targets is None or not self.training:
                raise ValueError("mode='train' needs targets and the model in training mode (model.train())")
            return super().forward(images, targets)
        if mode == "predict":
            was = self.training
            self.eval()
            with torch.no_grad():
                out = super().forward(images)
            self.train(was)
            return out
        raise ValueError(f"unknown mode {mode!r} (train, predict)")


@DETECTORS.register(name="TFA")
class TFA(FewShotFasterRCNN):
    """TFA: "Frustratingly Simple Few-Shot Object Detection" (Wang, Huang, Darrell, Gonzalez, Yu; ICML 2020,
    https://arxiv.org/abs/2003.06957). A :class:`FewShotFasterRCNN` started from the base detector by surgery
    (``init_from``, default ``random_init``), with everything but the last layer frozen by default
    (``frozen_parameters: [backbone, neck, rpn, roi_heads.box_head]``) and fine-tuned on a balanced K-shot set of
    base and novel classes. ``head: {type: CosineSimBBoxHead, scale: 20}`` is TFA w/cos; ``Shared2FCBBoxHead``
    TFA w/fc. Same arguments as :class:`FewShotFasterRCNN`.

    Example::

        >>> TFA.default_frozen
        ('backbone', 'neck', 'rpn', 'roi_heads.box_head')
    """

    default_frozen = ("backbone", "neck", "rpn", "roi_heads.box_head")

    def __init__(self, *args: Any, frozen_parameters: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, frozen_parameters=list(self.default_frozen if frozen_parameters is None
                                                       else frozen_parameters), **kwargs)


@DETECTORS.register(name="FSCE")
class FSCE(FewShotFasterRCNN):
    """FSCE: "Few-Shot Object Detection via Contrastive Proposal Encoding" (Sun, Li, Cai, Yuan, Zhang; CVPR
    2021, https://arxiv.org/abs/2103.05950). A :class:`FewShotFasterRCNN` started from the base detector by
    surgery, with only the backbone frozen by default (mmfewshot's ``frozen_parameters=['backbone']``: the FPN,
    RPN and RoI head are fine-tuned), a :class:`~fewray.algorithms.fewshot_det.roi_heads.ContrastiveRoIHead`
    whose ``ContrastiveBBoxHead`` (``head``) embeds RoIs for ``SupervisedContrastiveLoss`` (``loss_contrast``:
    temperature 0.2, IoU threshold 0.8, weight 0.5), decayed by ``ContrastiveLossDecayHook`` (``train.hooks``).
    FSCE also doubles the RPN's post-NMS proposals and halves the sampled RoIs (``rpn`` / ``roi`` in its configs).

    Example::

        >>> FSCE.default_frozen
        ('backbone',)
    """

    default_frozen = ("backbone",)

    def __init__(self, *args: Any, frozen_parameters: list[str] | None = None, head: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        from fewray.algorithms.fewshot_det.roi_heads import ContrastiveRoIHead

        self.roi_heads_class = ContrastiveRoIHead
        super().__init__(*args, head=head or {"type": "ContrastiveBBoxHead"},
                         frozen_parameters=list(self.default_frozen if frozen_parameters is None
                                                else frozen_parameters), **kwargs)
