"""Inference APIs for few-shot object detection (mmfewshot's ``mmfewshot.detection.apis`` names).

Detect objects of the base and novel classes in new images with a trained detector (``FasterRCNN``, ``TFA``,
``FSCE``), in a notebook or a script, without Ray or MLflow::

    >>> from fewray.apis.detection import init_detector, inference_detector, process_support_images, show_result
    >>> model = init_detector("configs/detection/tfa/tfa_cos_lite0_coco_10shot.yaml",
    ...                       "runs/det/tfa_cos_10shot_seed0/train_result.json")          # doctest: +SKIP
    >>> result = inference_detector(model, "street.jpg")                                   # doctest: +SKIP
    >>> result["labels"][:3], result["scores"][:3].round(2)                                # doctest: +SKIP
    (['person', 'car', 'person'], array([0.97, 0.88, 0.61], dtype=float32))
    >>> show_result("street.jpg", result, out_file="street_boxes.jpg", score_thr=0.3)    # doctest: +SKIP

A query-support detector (``MetaRCNN``, ``FSDetView``, ``AttentionRPNDetector``) detects the classes its kept
supports describe; :func:`process_support_images` replaces them with the user's (Attention-RPN: any new classes,
no fine-tuning)::

    >>> process_support_images(model, ["fish1.jpg", "fish2.jpg"], ["fish", "fish"],
    ...                        [[10, 20, 200, 150], [0, 0, 320, 240]])                    # doctest: +SKIP
    ['fish']

Images are file paths, PIL images or uint8 arrays ``(H, W, 3)``; they are given to the detector at their own
size (its transform resizes them to ``min_size`` / ``max_size`` and maps the boxes back), so boxes are in the
input image's pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewray.data.images import ImageLike, load_image
from fewray.platform.config import ExperimentConfig

__all__ = ["inference_detector", "init_detector", "process_support_images", "show_result"]


def init_detector(config: str | Path | ExperimentConfig | None, checkpoint: str | Path | None = None,
                  device: str = "cpu", overrides: list[str] | None = None) -> torch.nn.Module:
    """Build a detector from a config and load its weights (mmfewshot's ``init_detector``).

    Args:
        config: a YAML path, an :class:`ExperimentConfig`, or None to use the config stored in the checkpoint.
        checkpoint: ``checkpoint.pt``, a checkpoint directory or a ``train_result.json`` (None: random weights, the
            classes then come from the config's catalog, ``data.classes``).
        device: ``"cpu"`` or ``"cuda"``. overrides: ``KEY=VALUE`` config overrides.

    Returns:
        The detector in eval mode, ``model.cfg`` its config and ``model.class_names`` its classes.

    Raises:
        ConfigError: the config's model is not a detector (a classification config: use ``init_classifier``), no
            config and no checkpoint that stores one; CheckpointError: a missing or unreadable checkpoint, one of
            another model (a classifier's checkpoint), or weights that do not fit.

    Example::

        >>> init_detector("configs/classification/protonet_conv4_omniglot.yaml")
        Traceback (most recent call last):
        fewray.core.errors.ConfigError: model.type ProtoNet is not a detector (its training task is not detection): use init_classifier
    """
    from fewray.algorithms import build_classifier
    from fewray.platform.checkpoint import config_and_state, load_model_state
    from fewray.platform.errors import ConfigError
    from fewray.platform.preflight import check_checkpoint_model
    from fewray.tasks import task_for
    from fewray.tasks.detection import DetectionTask

    cfg, state, path = config_and_state(config, checkpoint, overrides, "init_detector")
    if not isinstance(task_for(cfg), DetectionTask):
        raise ConfigError(f"model.type {cfg.model.type} is not a detector (its training task is not detection): "
                          f"use init_classifier")
    model_cfg = cfg.model.model_dump()
    if state is not None:
        check_checkpoint_model(state, model_cfg, str(path))
        stored = ((state.get("config") or {}).get("model") or {}).get("class_names")
        if not model_cfg.get("class_names") and stored:
            model_cfg["class_names"] = list(stored)
    if not model_cfg.get("class_names"):
        model_cfg = task_for(cfg).resolve_config(cfg).model.model_dump()
    model = build_classifier(model_cfg, for_checkpoint=state is not None)
    if state is not None:
        load_model_state(model, state, path)
    model.cfg = cfg
    return model.to(device).eval()


def inference_detector(model: torch.nn.Module, imgs: ImageLike | list[ImageLike], batch_size: int = 2
                       ) -> dict[str, Any] | list[dict[str, Any]]:
    """Detections of one image or a list (mmfewshot's ``inference_detector``).

    Args:
        model: from :func:`init_detector`. imgs: a path, PIL image or uint8 ``(H, W, 3)`` array, or a list of them.
        batch_size: images per forward pass.

    Returns:
        Per image ``{"boxes": (N, 4) float32 x1, y1, x2, y2 in the image's pixels, "scores": (N,) float32,
        "labels": [class name, ...], "label_ids": (N,) int64 indices into model.class_names}``, by descending
        score; a dict for one image, a list for a list.

    Raises:
        DataError: a missing or unreadable image (naming it).

    Example::

        >>> from fewray.algorithms import build_classifier
        >>> det = build_classifier({"type": "FasterRCNN", "class_names": ["cat"], "min_size": 64, "max_size": 64,
        ...     "backbone": {"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]}})
        >>> out = inference_detector(det, np.zeros((40, 60, 3), np.uint8))
        >>> sorted(out), out["boxes"].shape[1]
        (['boxes', 'label_ids', 'labels', 'scores'], 4)
    """
    from fewray.tasks.detection import predict_images

    single = not isinstance(imgs, (list, tuple))
    items = [imgs] if single else list(imgs)
    arrays = [load_image(i, None, 3) for i in items]
    device = next(model.parameters()).device
    dets = predict_images(model, arrays, device, batch_size)
    names = list(model.class_names)
    out = [{"boxes": d["boxes"], "scores": d["scores"], "labels": [names[int(c)] for c in d["labels"]],
            "label_ids": d["labels"]} for d in dets]
    return out[0] if single else out


def process_support_images(model: torch.nn.Module, support_imgs: list[ImageLike], support_labels: list[str],
                           support_bboxes: list[Any] | None = None) -> list[str]:
    """Give a query-support detector the supports it detects by (mmfewshot's ``process_support_images``): each
    image's instance (its box, or the whole image) through the detector's support pipeline
    (``data.query_support.support_pipeline`` of ``model.cfg``), then ``model_init``.

    Args:
        model: from :func:`init_detector` (a ``MetaRCNN``, ``FSDetView`` or ``AttentionRPNDetector``).
        support_imgs: paths, PIL images or uint8 ``(H, W, 3)`` arrays. support_labels: each image's class name.
        support_bboxes: each image's box ``[x1, y1, x2, y2]`` in its pixels, or None (per image or for all): the
            whole image is the instance (a support already cropped).

    Returns:
        The classes the detector now detects: Attention-RPN detects exactly the classes given (new ones too);
        Meta R-CNN / FSDetView the given ones among those they were built with.

    Raises:
        ValueError: not a query-support detector; lists of different lengths; a class Meta R-CNN / FSDetView was not
            built with (naming it and the model's classes); DataError: a missing or unreadable image, a box with
            non-positive size or outside its image (naming the image).

    Example::

        >>> from fewray.algorithms import build_classifier
        >>> det = build_classifier({"type": "AttentionRPNDetector", "class_names": ["x"], "min_size": 64,
        ...     "max_size": 64, "neck": {"out_channels": 16}, "head": {"type": "Shared2FCBBoxHead"},
        ...     "backbone": {"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]}})
        >>> img = np.zeros((40, 60, 3), np.uint8)
        >>> process_support_images(det, [img, img, img], ["fish", "fish", "shark"], [[5, 5, 30, 30], None, None])
        ['fish', 'shark']
        >>> inference_detector(det, img)["boxes"].shape[1]
        4
    """
    from fewray.data.detection.records import check_box
    from fewray.data.detection.support_transforms import build_support_pipeline
    from fewray.platform.config import QuerySupportConfig

    if not hasattr(model, "model_init"):
        raise ValueError(f"{type(model).__name__} is not a query-support detector (MetaRCNN, FSDetView, "
                         f"AttentionRPNDetector): it takes no supports")
    boxes = list(support_bboxes) if support_bboxes is not None else [None] * len(support_imgs)
    if not len(support_imgs) == len(support_labels) == len(boxes):
        raise ValueError(f"support_imgs ({len(support_imgs)}), support_labels ({len(support_labels)}) and "
                         f"support_bboxes ({len(boxes)}) must have one entry per support")
    names = list(dict.fromkeys(support_labels))
    if hasattr(model, "set_classes"):
        model.set_classes(names)
    else:
        unknown = [n for n in names if n not in model.class_names]
        if unknown:
            raise ValueError(f"a support of class '{unknown[0]}', which {type(model).__name__} was not built with "
                             f"(classes: {', '.join(model.class_names)}): fine-tune it with that class, or use "
                             f"AttentionRPNDetector for new classes")
    cfg = getattr(model, "cfg", None)
    section = (cfg.data.query_support if cfg is not None else None) or QuerySupportConfig()
    pipeline = build_support_pipeline(section.pipeline())
    crops = []
    for i, (img, box) in enumerate(zip(support_imgs, boxes)):
        image = np.ascontiguousarray(load_image(img, None, 3))  # (3, H, W) uint8
        h, w = image.shape[1:]
        where = f"support {i} ({img if isinstance(img, (str, Path)) else type(img).__name__})"
        xyxy = [0.0, 0.0, float(w), float(h)] if box is None else check_box(box, w, h, where)
        crops.append(pipeline(image, np.asarray(xyxy, np.float32)))
    device = next(model.parameters()).device
    labels = torch.tensor([model.class_names.index(n) for n in support_labels], device=device)
    return model.model_init(torch.from_numpy(np.stack(crops)).to(device).float().div_(255.0), labels)


def show_result(img: ImageLike, result: dict[str, Any], out_file: str | Path | None = None,
                score_thr: float = 0.3) -> np.ndarray:
    """Draw a result of :func:`inference_detector` on its image (``torchvision.utils.draw_bounding_boxes``; each
    box labelled ``name score``, boxes below ``score_thr`` left out) and write it to ``out_file`` if given.

    Returns:
        The drawn image, uint8 ``(H, W, 3)``.

    Raises:
        DataError: an unreadable image; OutputPathError: ``out_file`` cannot be written.

    Example::

        >>> r = {"boxes": np.array([[5., 5., 30., 30.]]), "scores": np.array([0.9]), "labels": ["cat"]}
        >>> show_result(np.zeros((40, 60, 3), np.uint8), r).shape
        (40, 60, 3)
    """
    from PIL import Image

    from fewray.platform.plots import draw_detections

    image = load_image(img, None, 3)
    drawn = draw_detections(image, result["boxes"], list(result["labels"]), result["scores"], score_thr)
    hwc = drawn.transpose(1, 2, 0)
    if out_file is not None:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(hwc).save(out_file)
    return hwc
