"""Every plot is a valid PNG with the expected axes, read back from the file (not only "the file exists")."""

import numpy as np
import pytest
from PIL import Image

from fewray.platform.plots import (
    plot_accuracy_histogram,
    plot_accuracy_vs_shots,
    plot_hparams_vs_metric,
    plot_training_curves,
    read_png_axes,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path, min_w=300, min_h=200):
    """The file is a decodable PNG of a reasonable size with something drawn on it; returns its pixels."""
    raw = open(path, "rb").read()
    assert raw[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.verify()  # checksums and structure
    with Image.open(path) as img:
        assert img.format == "PNG"
        w, h = img.size
        pixels = np.asarray(img.convert("L"), dtype=np.float64)
    assert w >= min_w and h >= min_h
    assert pixels.std() > 5.0, "blank image"
    return pixels


def test_training_curves_png_has_loss_and_accuracy_axes(tmp_path):
    history = {"loss": [(s, 2.0 / s) for s in range(5, 55, 5)],
               "accuracy": [(s, 50 + s / 2) for s in range(5, 55, 5)],
               "val_accuracy_mean": [(25, 70.0), (50, 80.0)]}
    path = plot_training_curves(history, tmp_path / "curves.png")
    check_png(path)
    axes = read_png_axes(path)
    assert [(a["xlabel"], a["ylabel"]) for a in axes] == [("step", "loss"), ("step", "accuracy (%)")]
    assert axes[0]["title"] == "meta-training loss"
    assert axes[0]["lines"] == 1 and axes[1]["lines"] == 2  # loss; train + validation accuracy


def test_accuracy_histogram_png(tmp_path):
    rng = np.random.default_rng(0)
    path = plot_accuracy_histogram(list(rng.uniform(60, 100, 300)), "5-way 1-shot", tmp_path / "hist.png")
    check_png(path)
    (ax,) = read_png_axes(path)
    assert (ax["xlabel"], ax["ylabel"], ax["title"]) == ("task accuracy (%)", "tasks", "5-way 1-shot")
    assert ax["lines"] >= 5  # bars + mean line


def test_accuracy_vs_shots_png_has_error_bars(tmp_path):
    results = [{"shots": k, "accuracy_mean": m, "ci95": c, "ways": 5, "num_tasks": 100}
               for k, m, c in [(5, 97.0, 0.4), (1, 90.0, 1.1), (10, 98.5, 0.2)]]
    path = plot_accuracy_vs_shots(results, tmp_path / "shots.png")
    check_png(path)
    (ax,) = read_png_axes(path)
    assert (ax["xlabel"], ax["ylabel"]) == ("shots (K)", "accuracy (%)")
    assert ax["title"] == "5-way accuracy vs shots (100 tasks each)"
    assert ax["lines"] >= 2  # the mean line plus the error-bar collection
    with pytest.raises(ValueError):
        plot_accuracy_vs_shots([], tmp_path / "empty.png")


def test_hparams_vs_metric_png_has_one_panel_per_hyperparameter(tmp_path):
    trials = [
        {"params": {"train.optimizer.lr": 1e-3, "model.head.temperature": 1.0}, "metric": 90.0, "stopped_early": False,
         "best": True},
        {"params": {"train.optimizer.lr": 1e-2, "model.head.temperature": 0.1}, "metric": 70.0, "stopped_early": True},
        {"params": {"train.optimizer.lr": 3e-4, "model.head.temperature": 2.0}, "metric": None, "stopped_early": True},
    ]
    keys = ["train.optimizer.lr", "model.head.temperature"]
    path = plot_hparams_vs_metric(trials, keys, "val accuracy_mean (%)", tmp_path / "hp.png",
                                  log_params=["train.optimizer.lr"])
    check_png(path, min_w=600)
    axes = read_png_axes(path)
    assert [a["xlabel"] for a in axes] == keys
    assert all(a["ylabel"] == "val accuracy_mean (%)" for a in axes)
    assert [a["xscale"] for a in axes] == ["log", "linear"]
    assert all(a["lines"] == 3 for a in axes)  # completed, stopped early, best


def test_read_png_axes_rejects_other_files(tmp_path):
    Image.new("L", (10, 10)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="no fewray.axes"):
        read_png_axes(tmp_path / "plain.png")
    Image.new("L", (10, 10)).save(tmp_path / "plain.jpg")
    with pytest.raises(ValueError, match="not a PNG"):
        read_png_axes(tmp_path / "plain.jpg")
