"""Few-shot object detection's training task: detection batches of a detection catalog, validated by COCO AP.

The catalog is one ``pipelines/prepare_data.py detection`` writes (:mod:`fewray.data.detection.catalog`); the model
one of :data:`~fewray.algorithms.builder.DETECTORS` (``FasterRCNN`` base training, ``TFA``, ``FSCE``). The same
runtime as every other task trains it: a Ray Data stream of batches rebuilt from ``(seed, step)``
(:class:`~fewray.data.detection.training.DetectionStepBuilder`: ``data.classes``, ``data.few_shot``'s K-shot set,
resize to ``data.min_size`` / ``data.image_size``, flips), Ray Train DDP, checkpoints, resume, MLflow (each loss of
the dict a curve), the best checkpoint by ``val.metric`` (``AP``, ``BASE_AP``, ``NOVEL_AP50``, ...).

Example::

    >>> import torch
    >>> from fewray.tasks import TASKS
    >>> task = TASKS.get("detection")()
    >>> row = {"img": torch.zeros(1, 2, 3, 8, 8, dtype=torch.uint8), "img_hw": torch.tensor([[[8, 6], [4, 8]]]),
    ...        "boxes": torch.tensor([[[[1., 1., 3., 3.], [0., 0., 0., 0.]], [[2., 0., 5., 2.], [1., 1., 2., 3.]]]]),
    ...        "labels": torch.tensor([[[0, -1], [2, 1]]])}
    >>> inputs = task.model_inputs(row)
    >>> [tuple(i.shape) for i in inputs["images"]], [t["labels"].tolist() for t in inputs["targets"]]
    ([(3, 8, 6), (3, 4, 8)], [[1], [3, 2]])
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fewray.tasks.base import TASKS, TrainingTask

if TYPE_CHECKING:
    import torch

    from fewray.platform.config import ExperimentConfig

#: the validation metrics (COCO AP in percent over the evaluated classes, and per class split)
DET_METRICS = ("AP", "AP50", "AP75", "BASE_AP", "BASE_AP50", "BASE_AP75", "NOVEL_AP", "NOVEL_AP50", "NOVEL_AP75")


def decode_record_image(record: dict[str, Any]) -> np.ndarray:
    """A record's image as uint8 ``(3, H, W)`` RGB (from its ``image`` bytes, else its ``path``).

    Raises:
        DataError: an unreadable image (naming the image id).

    Example::

        >>> from fewray.data.detection.training import eval_records, example_catalog
        >>> decode_record_image(eval_records(example_catalog(), "test")[0][0]).shape
        (3, 480, 640)
    """
    from pathlib import Path

    from fewray.data.detection.builder import decode_rgb

    blob = record["image"] if record.get("image") is not None else Path(record["path"]).read_bytes()
    return decode_rgb(blob, f"{record.get('file_name')} (image {record.get('image_id')})")


def predict_images(model: "torch.nn.Module", images: list[np.ndarray], device: Any = "cpu",
                   batch_size: int = 2) -> list[dict[str, np.ndarray]]:
    """A detector's detections of uint8 images ``(3, H, W)`` (any sizes): per image ``{"boxes": (N, 4) float32
    x1, y1, x2, y2 in the image's pixels, "scores": (N,), "labels": (N,) int64 model class index 0..C-1}``, in eval
    mode without gradients and batches of ``batch_size``; the model's train/eval mode is restored.

    Example::

        >>> from fewray.algorithms import build_classifier
        >>> det = build_classifier({"type": "FasterRCNN", "class_names": ["a"], "min_size": 64, "max_size": 64,
        ...     "backbone": {"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]}})
        >>> out = predict_images(det, [np.zeros((3, 40, 60), np.uint8)])
        >>> sorted(out[0]), out[0]["boxes"].dtype
        (['boxes', 'labels', 'scores'], dtype('float32'))
    """
    import torch

    out: list[dict[str, np.ndarray]] = []
    for i in range(0, len(images), batch_size):
        chunk = [torch.from_numpy(np.ascontiguousarray(im)).to(device).float().div_(255.0)
                 for im in images[i:i + batch_size]]
        for det in model(mode="predict", images=chunk):
            out.append({"boxes": det["boxes"].float().cpu().numpy(), "scores": det["scores"].float().cpu().numpy(),
                        "labels": det["labels"].cpu().numpy().astype(np.int64) - 1})
    return out


def to_outputs(detections: list[dict[str, np.ndarray]], records: list[dict[str, Any]], category_ids: dict[str, int],
               model_classes: list[str]) -> list[dict[str, Any]]:
    """Detections (model class indices) of ``records``' images as an evaluator's per-image outputs: labels mapped
    by class name to ``category_ids`` (the evaluator's label of each catalog class); a class the catalog lacks is
    left out.

    Example::

        >>> det = {"boxes": np.zeros((2, 4), np.float32), "scores": np.array([0.9, 0.8]), "labels": np.array([1, 0])}
        >>> to_outputs([det], [{"image_id": 7}], {"cat": 3}, ["cat", "zebra"])[0]["labels"].tolist()
        [3]
    """
    ids = np.array([category_ids.get(n, -1) for n in model_classes], dtype=np.int64)
    out = []
    for rec, det in zip(records, detections):
        cats = ids[det["labels"]] if len(det["labels"]) else det["labels"].astype(np.int64)
        keep = cats >= 0
        out.append({"image_id": rec["image_id"], "boxes": det["boxes"][keep], "scores": det["scores"][keep],
                    "labels": cats[keep]})
    return out


def with_model_key(cfg: "ExperimentConfig", key: str, value: Any, conflict: bool, message: str) -> "ExperimentConfig":
    """``cfg`` with ``model.<key>`` set to ``value`` (a value the task derives from the data).

    Raises:
        ConfigError: ``message``, when ``conflict`` (the config gives another value).

    Example::

        >>> from fewray.platform.config import load_config
        >>> cfg = load_config("configs/classification/maml/conv4_omniglot.yaml")
        >>> with_model_key(cfg, "num_inner_steps", 3, False, "").model.num_inner_steps
        3
        >>> with_model_key(cfg, "num_inner_steps", 3, True, "model.num_inner_steps: not what the data says")
        Traceback (most recent call last):
        fewray.core.errors.ConfigError: model.num_inner_steps: not what the data says
    """
    from fewray.platform.config import config_from_dict
    from fewray.platform.errors import ConfigError

    if conflict:
        raise ConfigError(message)
    raw = cfg.to_dict()
    raw["model"][key] = value
    return config_from_dict(raw)


class DetectionScorer:
    """COCO AP of a detector on a catalog split: the split's ground truth, evaluated with
    :class:`~fewray.evaluation.coco_detection.CocoDetectionEvaluator` (a VOC catalog:
    :class:`~fewray.evaluation.voc_map.VOCDetectionEvaluator`, VOC07 AP50) for every class of the catalog (a class the
    model does not predict has AP 0: a base-only detector's novel AP) and per class split (``BASE`` from
    ``data.base_classes``, ``NOVEL`` from ``data.novel_classes``; a split the catalog lacks is left out).

    Args:
        root (str): a detection catalog. split (str): its split. base_classes, novel_classes: split names or lists.
        decode (bool): decode the images here (rank 0's validation); False: keep their bytes only (the evaluation
            fan-out decodes them in its Ray tasks).
        classwise (bool): COCO: also ``AP_{class}`` and ``AP50_{class}`` (a VOC catalog always gives ``AP50_{class}``).

    Attributes:
        records, class_names, images (list of uint8 (3, H, W)), evaluator, category_ids (catalog class -> id).

    Example::

        >>> from fewray.data.detection.training import example_catalog
        >>> s = DetectionScorer(example_catalog(), "test", decode=False)   # BCCD: a VOC catalog, VOC07 AP50
        >>> gt = [{"boxes": r["boxes"], "scores": np.ones(len(r["boxes"])), "labels": r["labels"]} for r in s.records]
        >>> ev = s.evaluator
        >>> m = s.metrics(ev.merge([ev.process(s.outputs(gt, s.class_names))]))   # the ground truth as detections
        >>> m["AP50"], m["NOVEL_AP50"], m["BASE_AP50"]
        (100.0, 100.0, 100.0)
    """

    def __init__(self, root: str, split: str, base_classes: Any = "BASE_CLASSES",
                 novel_classes: Any = "NOVEL_CLASSES", decode: bool = True, classwise: bool = False) -> None:
        from fewray.data.detection.catalog import check_detection_catalog
        from fewray.data.detection.splits import resolve_classes
        from fewray.data.detection.training import eval_records
        from fewray.evaluation.coco_detection import CocoDetectionEvaluator, coco_gt_from_records

        self.records, self.class_names = eval_records(root, split)  # with the image bytes (the fan-out ships them)
        info = check_detection_catalog(root)
        splits = dict(info.get("class_splits") or {})
        #: a VOC catalog is scored by VOC07 AP50 (11 points, difficult boxes ignored), a COCO one by COCOeval
        self.voc = info.get("format") == "voc"
        self.category_ids = {name: i + (0 if self.voc else 1) for i, name in enumerate(self.class_names)}
        class_splits = {}
        for key, spec in (("BASE_CLASSES", base_classes), ("NOVEL_CLASSES", novel_classes)):
            if isinstance(spec, str) and spec not in splits:
                continue
            class_splits[key] = resolve_classes(spec, self.class_names, splits, source=root)
        if self.voc:
            from fewray.evaluation.voc_map import VOCDetectionEvaluator

            anns = {r["image_id"]: {"bboxes": r["boxes"][~r["ignore"]], "labels": r["labels"][~r["ignore"]],
                                    "bboxes_ignore": r["boxes"][r["ignore"]], "labels_ignore": r["labels"][r["ignore"]]}
                    for r in self.records}
            self.evaluator = VOCDetectionEvaluator(anns, len(self.class_names), self.class_names, class_splits)
        else:
            gt = coco_gt_from_records(
                [{"image_id": r["image_id"], "width": r["width"], "height": r["height"], "boxes": r["boxes"],
                  "labels": r["labels"] + 1, "iscrowd": r["ignore"], "areas": r["areas"]} for r in self.records],
                [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)])
            self.evaluator = CocoDetectionEvaluator(gt, class_splits=class_splits, classwise=classwise)
        self.images = [decode_record_image(r) for r in self.records] if decode else []

    def outputs(self, detections: list[dict[str, np.ndarray]], model_classes: list[str],
                start: int = 0) -> list[dict[str, Any]]:
        """Detections of images ``start..`` (model class indices) as the evaluator's per-image outputs (category
        ids of the catalog, matched by class name)."""
        return to_outputs(detections, self.records[start:start + len(detections)], self.category_ids, model_classes)

    def metrics(self, merged: Any) -> dict[str, float]:
        """Every name of :data:`DET_METRICS` (NaN for a class split the catalog lacks) plus the evaluator's others."""
        m = self.evaluator.compute(merged)
        return {**{k: float("nan") for k in DET_METRICS}, **m}


class DetectionValidator:
    """Validation of a detector on ``val.split``: COCO AP (:class:`DetectionScorer`) on one shard (rank 0).

    Args:
        cfg (ExperimentConfig): ``data.root``, ``data.base_classes`` / ``novel_classes``, ``val.split``,
            ``val.batch_size`` (images per forward pass).

    Example::

        >>> from fewray.data.detection.training import example_catalog
        >>> from fewray.platform.config import load_config
        >>> cfg = load_config("configs/detection/faster_rcnn/lite0_fpn_coco_base_training.yaml",
        ...                   [f"data.root={example_catalog()}", "val.split=test"])
        >>> len(DetectionValidator(cfg).scorer.images)
        72
    """

    def __init__(self, cfg: "ExperimentConfig") -> None:
        d = cfg.data
        self.scorer = DetectionScorer(d.root, cfg.val.split, d.base_classes, d.novel_classes)
        self.batch_size = min(cfg.val.batch_size, 8)

    def __call__(self, model: "torch.nn.Module", device: Any = "cpu") -> dict[str, float]:
        """:data:`DET_METRICS` in percent; leaves ``model`` in train mode."""
        s = self.scorer
        dets = predict_images(model, s.images, device, self.batch_size)
        model.train()
        ev = s.evaluator
        return s.metrics(ev.merge([ev.process(s.outputs(dets, list(model.class_names)))]))


@TASKS.register(name="detection")
class DetectionTask(TrainingTask):
    """Detection batches of ``train.batch_size`` images of a detection catalog: ``model(mode="train", images,
    targets)`` (torchvision's contract; the loss dict summed, each logged), validated by COCO AP on ``val.split``
    (:class:`DetectionValidator`; ``val.metric: AP`` or ``BASE_AP`` / ``NOVEL_AP`` ...).

    Example::

        >>> from fewray.data.detection.training import example_catalog
        >>> from fewray.platform.config import load_config
        >>> cfg = load_config("configs/detection/tfa/cos_lite0_fpn_coco_kshot.yaml", [f"data.root={example_catalog()}",
        ...                   "data.few_shot={num_novel_shots: 2}"])
        >>> DetectionTask().resolve_config(cfg).model.class_names
        ['RBC', 'WBC', 'Platelets']
    """

    rate_name = "batches_per_second"
    val_name = "validation"
    val_metrics = DET_METRICS
    summary_metrics = ("AP", "AP50", "BASE_AP", "BASE_AP50", "NOVEL_AP", "NOVEL_AP50")

    def resolve_config(self, cfg: "ExperimentConfig") -> "ExperimentConfig":
        """``cfg`` with ``model.class_names`` filled from ``data.classes`` (an explicit different list is an error).

        Raises:
            ConfigError: ``model.class_names`` given and not the classes of ``data.classes``.
        """
        from fewray.data.detection.training import model_classes

        names = model_classes(cfg.data.root, cfg.data.classes)
        given = getattr(cfg.model, "class_names", None)
        return with_model_key(cfg, "class_names", names, given is not None and list(given) != names,
                              f"model.class_names ({len(given or ())} classes) is not data.classes of "
                              f"{cfg.data.root} ({len(names)} classes): leave it out to take data.classes")

    @staticmethod
    def stream_args(cfg: "ExperimentConfig") -> dict[str, Any]:
        """The keyword arguments of a detection stream of ``cfg`` (train split, ``data.*``, batch size, seed)."""
        d = cfg.data
        return dict(root=d.root, split="train", classes=d.classes, few_shot=d.few_shot.model_dump() if d.few_shot
                    else None, batch_size=cfg.train.batch_size, seed=cfg.seed, min_size=d.min_size or d.image_size,
                    max_size=d.image_size, flip=d.augment != "none")

    def dataset(self, cfg, start, stop):
        """Batches ``start..stop-1`` (:func:`fewray.platform.streaming.detection_dataset`)."""
        from fewray.platform.streaming import detection_dataset

        return detection_dataset(start=start, stop=stop, **self.stream_args(cfg))

    def check_data(self, cfg) -> None:
        """A detection catalog whose train split (cut to ``data.classes`` and the K-shot set) holds boxes.

        Raises:
            DataError: not a detection catalog (naming it), an unknown class or split, no training box;
                ConfigError: ``data.channels`` not 3.
        """
        from fewray.data.detection.training import training_records
        from fewray.platform.errors import ConfigError, DataError

        if cfg.data.channels != 3:
            raise ConfigError(f"data.channels={cfg.data.channels}: a detection catalog holds RGB images (3)")
        d = cfg.data
        records = training_records(d.root, "train", d.classes, d.few_shot.model_dump() if d.few_shot else None,
                                   with_images=False)
        if not records:
            raise DataError(f"the train split of {d.root} has no box of data.classes={d.classes!r} to train on")

    def check_val_data(self, cfg) -> None:
        """``val.split`` must be a split of the detection catalog with images.

        Raises:
            DataError: a missing split (naming those there are), or an empty one.
        """
        from fewray.data.detection.training import eval_records
        from fewray.platform.errors import DataError

        records, _ = eval_records(cfg.data.root, cfg.val.split, with_images=False)
        if not records:
            raise DataError(f"the {cfg.val.split} split of {cfg.data.root} has no images: validation needs some")

    def model_inputs(self, batch) -> dict[str, Any]:
        """``images``: floats in [0, 1] ``(3, h, w)`` cut from the padded canvas; ``targets``: ``boxes (M, 4)``
        and ``labels (M,)`` in ``1..C`` (torchvision's, background 0) without the padding."""
        img, hw, boxes, labels = batch["img"][0], batch["img_hw"][0], batch["boxes"][0], batch["labels"][0]
        images, targets = [], []
        for b in range(img.shape[0]):
            h, w = int(hw[b, 0]), int(hw[b, 1])
            images.append(img[b, :, :h, :w].float().div(255.0))
            keep = labels[b] >= 0
            targets.append({"boxes": boxes[b][keep].float(), "labels": labels[b][keep].long() + 1})
        return {"images": images, "targets": targets}

    def validator(self, cfg):
        """:class:`DetectionValidator` of ``val.split``."""
        return DetectionValidator(cfg)

    def training_artifacts(self, cfg, best_model, out_dir):
        """``detections_val.png``: the best checkpoint's detections (score >= 0.3) on the first 4 images of
        ``val.split``, drawn (:func:`fewray.platform.plots.plot_detections`)."""
        from pathlib import Path

        from fewray.platform.plots import plot_detections

        d = cfg.data
        scorer = DetectionScorer(d.root, cfg.val.split, d.base_classes, d.novel_classes, decode=False)
        records = scorer.records[:4]
        model = best_model()
        dets = predict_images(model, [decode_record_image(r) for r in records])
        outputs = scorer.outputs(dets, list(model.class_names))
        names = {v: k for k, v in scorer.category_ids.items()}
        return [plot_detections(records, outputs, names, Path(out_dir) / "detections_val.png")]

    def val_line(self, val: dict[str, float]) -> str:
        """``validation AP 12.30, AP50 25.10, BASE_AP 14.20, NOVEL_AP 3.10`` (NaN splits left out)."""
        shown = [k for k in ("AP", "AP50", "BASE_AP", "NOVEL_AP") if not math.isnan(val.get(k, float("nan")))]
        return "validation " + ", ".join(f"{k} {val[k]:.2f}" for k in shown)
