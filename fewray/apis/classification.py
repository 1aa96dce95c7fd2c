"""Inference APIs for few-shot classification (the counterpart of ``mmfewshot.classification.apis``).

Classify new images against a handful of labelled examples with a meta-trained model, in a notebook or a
script, without Ray or MLflow::

    >>> from fewray.apis import (init_classifier, process_support_images,
    ...                                   inference_classifier, show_result_pyplot)
    >>> model = init_classifier("configs/classification/protonet_conv4_omniglot.yaml",
    ...                         "runs/protonet/train_result.json")                      # doctest: +SKIP
    >>> process_support_images(model, ["a.png", "b.png", "c.png"], ["alpha", "beta", "gamma"])  # doctest: +SKIP
    >>> result = inference_classifier(model, "query.png")                              # doctest: +SKIP
    >>> result["pred_class"], round(result["pred_score"], 3)                           # doctest: +SKIP
    ('beta', 0.912)
    >>> show_result_pyplot("query.png", result, out_file="query_result.png")          # doctest: +SKIP

Images are given as file paths, PIL images or uint8 arrays ``(H, W)`` / ``(H, W, C)``; images with wider
samples (16-bit PNGs, PIL modes ``I;16``, ``I``, ``F``) are scaled to 8 bits as the catalogs do
(:func:`~fewray.data.catalog.to_8bit`), converted to the config's ``data.channels`` (grayscale ``L``
or ``RGB``) and resized to ``data.image_size`` squared with a plain Lanczos resize (as the catalogs are
built), then scaled to [0, 1] floats as in meta-test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fewray.algorithms import build_classifier
from fewray.data.catalog import to_8bit
from fewray.data.images import ImageLike, describe_image, load_image
from fewray.data.sources._common import open_image
from fewray.platform.checkpoint import load_classifier
from fewray.platform.config import ExperimentConfig
from fewray.platform.errors import DataError
from fewray.platform.features import channels_last, to_float

__all__ = ["SupportSetError", "inference_classifier", "init_classifier", "load_image", "process_support_images",
           "show_result_pyplot"]


class SupportSetError(DataError, ValueError):
    """A support or query set the model cannot use: no images, images and labels of different lengths,
    fewer than 2 classes. A :class:`~fewray.platform.errors.DataError` (one line, exit 2 in a pipeline) and,
    as before, a ``ValueError``."""


def init_classifier(
    config: str | Path | ExperimentConfig | None,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    overrides: list[str] | None = None,
) -> torch.nn.Module:
    """Build a classifier from a config and load its weights.

    Args:
        config: a YAML config path (read with :func:`~fewray.platform.config.load_config`), an
            :class:`~fewray.platform.config.ExperimentConfig`, or None to use the config stored in the checkpoint.
        checkpoint: ``checkpoint.pt``, a checkpoint directory or a ``train_result.json``; None leaves the
            model randomly initialised. Loaded with ``weights_only=True`` (no code in the file runs).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        overrides: ``["data.image_size=28", ...]`` applied when ``config`` is a path.

    Returns:
        The classifier in eval mode on ``device``, with the config attached as ``model.cfg``.

    Raises:
        ConfigError: missing/invalid config, or ``config=None`` without a checkpoint that holds one.
        CheckpointError: missing or unreadable checkpoint, a checkpoint of another classifier, backbone or head
            type than the config's, weights that do not fit the model.

    Example::

        >>> model = init_classifier("configs/classification/protonet_conv4_omniglot.yaml")
        >>> model.cfg.data.image_size, model.training
        (28, False)
    """
    return load_classifier(config, checkpoint, device, overrides)


def _batch(model: torch.nn.Module, imgs: Sequence[ImageLike], kind: str) -> torch.Tensor:
    """The ``kind`` (support/query) images as one float batch; errors name ``<kind> image <i>`` for in-memory images."""
    cfg = model.cfg.data
    x = np.stack([load_image(im, cfg.image_size, cfg.channels,
                             None if isinstance(im, (str, Path)) else f"{kind} image {i} ({describe_image(im)})")
                  for i, im in enumerate(imgs)])
    return to_float(x).to(next(model.parameters()).device)


def _check_model(model: torch.nn.Module) -> None:
    if not isinstance(getattr(model, "cfg", None), ExperimentConfig):
        raise TypeError("model has no config: build it with init_classifier(config, checkpoint)")


def process_support_images(
    model: torch.nn.Module,
    support_imgs: Sequence[ImageLike],
    support_labels: Sequence[str | int],
    meta_test_cfg: dict[str, Any] | None = None,
) -> list[str | int]:
    """Give the model a new task's support set (mmfewshot's ``process_support_images``).

    Runs the meta-test protocol's first half: ``before_meta_test(meta_test_cfg)``, ``before_forward_support()``,
    ``model(mode='support', img=(M, C, H, W), label=(M,))`` and ``before_forward_query()`` (prototypes are
    computed, a fine-tuned head is trained, MAML adapts). The classes are remembered on the model for
    :func:`inference_classifier`.

    Args:
        model: from :func:`init_classifier`.
        support_imgs: ``M`` images (paths, PIL images or uint8 arrays ``(H, W[, C])``), any size and mode.
        support_labels: ``M`` class labels (names or ints); class ``i`` of the task is the ``i``-th distinct
            label in order of first appearance.
        meta_test_cfg: optional settings for ``before_meta_test`` (e.g. ``{"finetune_steps": 100}``).

    Returns:
        The task's classes in label order.

    Raises:
        DataError: an unreadable or empty image (naming it); :class:`SupportSetError` (a DataError and a
            ValueError): no images, images and labels of different lengths, fewer than 2 classes (a
            one-class task would predict its class with probability 1 for any query);
        TypeError: a model not built by :func:`init_classifier`.

    Example::

        >>> classes = process_support_images(model, ["cat1.jpg", "dog1.jpg"], ["cat", "dog"])  # doctest: +SKIP
        >>> classes  # doctest: +SKIP
        ['cat', 'dog']
    """
    _check_model(model)
    if len(support_imgs) == 0 or len(support_imgs) != len(support_labels):
        raise SupportSetError(f"expected the same, non-zero number of support images and labels, got "
                              f"{len(support_imgs)} images and {len(support_labels)} labels")
    classes: list[str | int] = list(dict.fromkeys(support_labels))
    if len(classes) < 2:
        raise SupportSetError(f"support set has only 1 class ({classes[0]!r}): it needs at least 2 classes "
                              f"(with one, every query gets that class with probability 1)")
    index = {c: i for i, c in enumerate(classes)}
    x = _batch(model, support_imgs, "support")
    y = torch.tensor([index[c] for c in support_labels], dtype=torch.long, device=x.device)
    with torch.no_grad():  # fine-tuning heads and MAML enable gradients where they need them
        model.before_meta_test(meta_test_cfg)
        model.before_forward_support()
        model(mode="support", img=x, label=y)
        model.before_forward_query()
    model.support_classes = classes
    return classes


def inference_classifier(
    model: torch.nn.Module, query_img: ImageLike | list[ImageLike]
) -> dict[str, Any] | list[dict[str, Any]]:
    """Classify query image(s) against the support set given by :func:`process_support_images`.

    Args:
        model: from :func:`init_classifier`, after :func:`process_support_images`.
        query_img: one image (path, PIL image, uint8 array ``(H, W[, C])``) or a list of them (one batch).

    Returns:
        For one image ``{"pred_label": int, "pred_class": class, "pred_score": float, "scores": {class: float}}``:
        ``pred_label`` is the index of the predicted class among the support classes, ``pred_class`` the
        label as given to :func:`process_support_images`, ``scores`` the softmax of the model's query scores
        ``(N,)`` (probabilities summing to 1), ``pred_score`` the largest. For a list, a list of such dicts.

    Raises:
        RuntimeError: no support set yet; DataError: an unreadable or empty image (naming it);
        :class:`SupportSetError`: an empty list of query images.

    Example::

        >>> inference_classifier(model, "query.jpg")["pred_class"]  # doctest: +SKIP
        'dog'
    """
    _check_model(model)
    classes = getattr(model, "support_classes", None)
    if not classes:
        raise RuntimeError("no support set: call process_support_images(model, images, labels) first")
    many = isinstance(query_img, list)
    imgs = query_img if many else [query_img]
    if not imgs:
        raise SupportSetError("no query images: inference_classifier needs an image or a non-empty list")
    with torch.no_grad():
        scores = model(mode="query", img=_batch(model, imgs, "query"))
    probs = torch.softmax(scores.float(), dim=-1).cpu()
    out = []
    for p in probs:
        k = int(p.argmax())
        out.append({"pred_label": k, "pred_class": classes[k], "pred_score": float(p[k]),
                    "scores": {c: float(v) for c, v in zip(classes, p.tolist())}})
    return out if many else out[0]


def show_result_pyplot(
    img: ImageLike,
    result: dict[str, Any],
    out_file: str | Path | None = None,
    figsize: tuple[float, float] = (4.0, 4.0),
    dpi: int = 100,
) -> np.ndarray:
    """Draw an image with its predicted class and score as the title (matplotlib, Agg; no window opens).

    Args:
        img: the query image (path, PIL image or uint8 array ``(H, W[, C])``), shown at its own size and mode.
        result: a dict from :func:`inference_classifier`.
        out_file: write the figure there as PNG (``figsize * dpi`` pixels, 400x400 by default).
        figsize, dpi: figure size in inches and resolution.

    Returns:
        The rendered figure as an RGB uint8 array ``(round(figsize[1] * dpi), round(figsize[0] * dpi), 3)``.

    Raises:
        DataError: an unreadable or empty image.

    Example::

        >>> show_result_pyplot("query.jpg", result, out_file="result.png").shape  # doctest: +SKIP
        (400, 400, 3)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(img, Image.Image):
        pil = to_8bit(img, describe_image(img))
    elif isinstance(img, np.ndarray):
        pil = open_image(np.ascontiguousarray(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img),
                         describe_image(img))
    else:
        pil = open_image(Path(img).expanduser(), str(img))
    gray = pil.mode in ("1", "L", "LA")
    arr = np.asarray(pil.convert("L" if gray else "RGB"))
    fig = Figure(figsize=figsize, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.05, 0.05, 0.9, 0.82))
    ax.imshow(arr, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(f"{result['pred_class']} ({result['pred_score']:.3f})", fontsize=12)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if out_file is not None:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_file, format="png", dpi=dpi)
    return rgb
