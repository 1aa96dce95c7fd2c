"""Matplotlib figures logged as MLflow artifacts: training curves and task-accuracy histograms."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_training_curves(history: dict[str, list[tuple[int, float]]], path: str | Path) -> Path:
    """Save training loss (left axis) and meta-validation accuracy (right panel) against step as a PNG.

    Args:
        history: ``{"loss": [(step, value)], "accuracy": [...], "val_accuracy_mean": [...]}``
            (missing keys are skipped).
        path: output PNG path.
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if "loss" in history:
        s, v = zip(*history["loss"])
        ax_loss.plot(s, v, label="train loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("meta-training loss")
    for key, label in (("accuracy", "train episodes"), ("val_accuracy_mean", "meta-validation")):
        if key in history:
            s, v = zip(*history[key])
            ax_acc.plot(s, v, marker="o" if key.startswith("val") else None, label=label)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_title("accuracy")
    ax_acc.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
