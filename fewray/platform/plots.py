"""Matplotlib figures logged as MLflow artifacts: training curves, task-accuracy histograms, accuracy vs shots
and, for a sweep, each hyperparameter against the metric.

Every PNG carries a description of its axes in a ``fewray.axes`` text chunk (JSON list of
``{"title", "xlabel", "ylabel", "xscale", "lines"}``), read back with :func:`read_png_axes`, so a test or a
user can check what a stored plot shows without looking at it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import json  # noqa: E402
from typing import Any  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

AXES_KEY = "fewray.axes"


def _save(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as a PNG with its axes described in the ``fewray.axes`` text chunk, and close it."""
    axes = [
        {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "xscale": ax.get_xscale(),
         "lines": len(ax.lines) + len(ax.collections) + len(ax.patches)}
        for ax in fig.get_axes()
    ]
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png", metadata={AXES_KEY: json.dumps(axes)})
    plt.close(fig)
    return Path(path)


def read_png_axes(path: str | Path) -> list[dict[str, Any]]:
    """The axes description stored in a PNG written by this module.

    Returns:
        ``[{"title", "xlabel", "ylabel", "xscale", "lines"}, ...]``, one entry per axes.

    Raises:
        ValueError: the file is not a PNG or carries no ``fewray.axes`` chunk.
    """
    from PIL import Image

    with Image.open(path) as img:
        if img.format != "PNG":
            raise ValueError(f"{path} is not a PNG (format {img.format})")
        img.load()
        text = dict(getattr(img, "text", {}) or {})
    if AXES_KEY not in text:
        raise ValueError(f"{path} has no {AXES_KEY} metadata")
    return json.loads(text[AXES_KEY])


def plot_training_curves(history: dict[str, list[tuple[int, float]]], path: str | Path,
                         val_metric: str = "accuracy_mean") -> Path:
    """Save training loss (left axis) and meta-validation accuracy (right panel) against step as a PNG.

    Args:
        history: ``{"loss": [(step, value)], "accuracy": [...], "val_accuracy_mean": [...]}``
            (missing keys are skipped).
        path: output PNG path.
        val_metric: the validation metric of the right panel (``val_<metric>`` in ``history``); another than
            ``accuracy_mean`` (a multi-label model's ``mAP``) titles the panel "validation <metric>".
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if "loss" in history:
        s, v = zip(*history["loss"])
        ax_loss.plot(s, v, label="train loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("meta-training loss")
    few_shot = val_metric == "accuracy_mean"
    val_label = "meta-validation" if few_shot else f"validation {val_metric}"
    for key, label in (("accuracy", "train episodes"), (f"val_{val_metric}", val_label)):
        if key in history:
            s, v = zip(*history[key])
            ax_acc.plot(s, v, marker="o" if key.startswith("val") else None, label=label)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("accuracy (%)" if few_shot else f"{val_metric} (%)")
    ax_acc.set_title("accuracy" if few_shot else val_label)
    if ax_acc.lines:
        ax_acc.legend(loc="lower right")
    return _save(fig, path)


def plot_accuracy_histogram(accuracies: list[float], title: str, path: str | Path) -> Path:
    """Save a histogram of per-task accuracies (percent) with the mean marked, as a PNG."""
    accs = np.asarray(accuracies, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(accs, bins=min(40, max(5, len(np.unique(accs)))), color="tab:blue", alpha=0.8)
    ax.axvline(accs.mean(), color="tab:red", linestyle="--", label=f"mean {accs.mean():.2f}%")
    ax.set_xlabel("task accuracy (%)")
    ax.set_ylabel("tasks")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_accuracy_vs_shots(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Save meta-test accuracy against the number of shots, with 95% CI error bars, as a PNG.

    Args:
        results: one dict per shot count with ``shots``, ``accuracy_mean``, ``ci95`` (percent), ``ways``
            and ``num_tasks``; plotted in order of ``shots``.
        path: output PNG path.

    Raises:
        ValueError: ``results`` is empty.
    """
    if not results:
        raise ValueError("plot_accuracy_vs_shots needs at least one result")
    rs = sorted(results, key=lambda r: r["shots"])
    shots = [r["shots"] for r in rs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(shots, [r["accuracy_mean"] for r in rs], yerr=[r["ci95"] for r in rs], marker="o", capsize=4,
                label="mean ± 95% CI")
    ax.set_xticks(shots)
    ax.set_xlabel("shots (K)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{rs[0]['ways']}-way accuracy vs shots ({rs[0]['num_tasks']} tasks each)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_hparams_vs_metric(trials: list[dict[str, Any]], params: list[str], metric: str, path: str | Path,
                           log_params: list[str] | tuple[str, ...] = ()) -> Path:
    """Save one panel per hyperparameter: its value against the trial's metric (a sweep summary), as a PNG.

    Args:
        trials: one dict per trial with ``params`` (``{name: value}``), ``metric`` (float or None for a trial
            without a result), ``stopped_early`` (bool) and ``best`` (bool, the chosen trial).
        params: hyperparameter names, one panel each (x axis); log_params: those drawn on a log x axis.
        metric: y-axis label (e.g. ``val accuracy_mean (%)``).
        path: output PNG path.

    Raises:
        ValueError: ``params`` is empty.
    """
    if not params:
        raise ValueError("plot_hparams_vs_metric needs at least one hyperparameter")
    fig, axes = plt.subplots(1, len(params), figsize=(5 * len(params), 4), squeeze=False)
    scored = [t for t in trials if t.get("metric") is not None]
    for ax, name in zip(axes[0], params):
        for early, style in ((False, dict(marker="o", color="tab:blue", label="completed")),
                             (True, dict(marker="x", color="tab:gray", label="stopped early (ASHA)"))):
            pts = [(t["params"][name], t["metric"]) for t in scored if bool(t.get("stopped_early")) == early
                   and isinstance(t["params"].get(name), (int, float))]
            if pts:
                ax.scatter(*zip(*pts), **style)
        best = [t for t in scored if t.get("best")]
        if best and isinstance(best[0]["params"].get(name), (int, float)):
            ax.scatter([best[0]["params"][name]], [best[0]["metric"]], marker="*", s=200, color="tab:red",
                       label="best", zorder=3)
        if name in log_params:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.set_title(f"{name} vs {metric}")
        ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def draw_detections(image: np.ndarray, boxes: Any, labels: list[str], scores: Any = None,
                    score_thr: float = 0.3, width: int = 2) -> np.ndarray:
    """An image with its detections drawn (``torchvision.utils.draw_bounding_boxes``): uint8 ``(3, H, W)`` in and
    out; ``boxes`` ``(N, 4)`` x1, y1, x2, y2 pixels, ``labels`` N class names, ``scores`` ``(N,)`` (boxes below
    ``score_thr`` left out; each drawn label reads ``name 0.87``).

    Example::

        >>> img = draw_detections(np.zeros((3, 40, 60), np.uint8), [[5, 5, 30, 30]], ["cat"], [0.9])
        >>> img.shape, int(img.max()) > 0
        ((3, 40, 60), True)
    """
    import torch
    from torchvision.utils import draw_bounding_boxes

    b = torch.as_tensor(np.array(boxes, dtype=np.float32).reshape(-1, 4))  # a copy: inputs may be read-only
    s = np.ones(len(b), np.float32) if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
    keep = s >= score_thr
    if not keep.any():  # nothing to draw (torchvision would warn)
        return np.ascontiguousarray(image).copy()
    text = [f"{n} {v:.2f}" for n, v, k in zip(labels, s, keep) if k]
    out = draw_bounding_boxes(torch.from_numpy(np.ascontiguousarray(image)), b[torch.from_numpy(keep)], text,
                              colors="orange", width=width)
    return out.numpy()


def plot_detections(records: list[dict[str, Any]], outputs: list[dict[str, Any]], names: dict[int, str],
                    path: str | Path, score_thr: float = 0.3) -> Path:
    """A PNG of detections on a few evaluation images side by side (an MLflow artifact of an evaluation).

    Args:
        records: the images' records (``image`` bytes or ``path``); outputs: per image ``boxes``, ``scores``,
            ``labels`` (category ids); names: category id -> name; score_thr: the drawing threshold.
    """
    from fewray.tasks.detection import decode_record_image

    fig, axes = plt.subplots(1, len(records), figsize=(4 * len(records), 4), squeeze=False)
    for ax, rec, out in zip(axes[0], records, outputs):
        drawn = draw_detections(decode_record_image(rec), out["boxes"], [names.get(int(c), str(c)) for c in
                                out["labels"]], out["scores"], score_thr)
        ax.imshow(drawn.transpose(1, 2, 0))
        ax.set_title(f"image {rec['image_id']}: {int((np.asarray(out['scores']) >= score_thr).sum())} boxes")
        ax.axis("off")
    return _save(fig, path)
