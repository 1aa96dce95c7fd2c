"""Inference APIs for few-shot object detection (mmfewshot's ``mmfewshot.detection.apis`` names).

Detect objects of the base and novel classes in new images with a trained detector (``FasterRCNN``, ``TFA``,
``FSCE``), in a notebook or a script, without Ray or MLflow::

    >>> from fewray.apis import init_detector, inference_detector, show_result
    >>> model = init_detector("configs/detection/tfa/tfa_cos_lite0_coco_10shot.yaml",
    ...                       "runs/det/tfa_cos_10shot_seed0/train_result.json")          # doctest: +SKIP
    >>> result = inference_detector(model, "street.jpg")                                   # doctest: +SKIP
    >>> result["labels"][:3], result["scores"][:3].round(2)                                # doctest: +SKIP
    (['person', 'car', 'person'], array([0.97, 0.88, 0.61], dtype=float32))
    >>> show_result("street.jpg", result, out_file="street_boxes.jpg", score_thr=0.3)    # doctest: +SKIP

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

__all__ = ["inference_detector", "init_detector", "show_result"]


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
