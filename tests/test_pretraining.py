"""Pre-training on plain batches (Baseline family), training augmentation, and the two-stage MetaBaseline."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA, tiny_config
from fewray.platform.checkpoint import load_checkpoint
from fewray.data.catalog import read_labels
from fewray.data.builders import BatchBuilder
from fewray.data.transforms import Augmenter, train_transform
from fewray.platform.errors import ConfigError

BASELINE = ["model.type=Baseline", "model.head={type: LinearHead, in_channels: 64}", "train.batch_size=32"]


def _caltech_images(n: int = 4, size: int = 32) -> np.ndarray:
    """``(n, 3, size, size)`` uint8 real Caltech-101 photographs."""
    files = sorted((SHARED_DATA / "caltech101" / "101_ObjectCategories" / "ant").glob("*.jpg"))[:n]
    assert len(files) == n, "real Caltech-101 release missing in ../shared/data/caltech101"
    imgs = [np.asarray(Image.open(f).convert("RGB").resize((size, size))).transpose(2, 0, 1) for f in files]
    return np.stack(imgs)


def test_batch_builder_shuffles_every_image_once_per_epoch(omniglot_catalog):
    labels = read_labels(str(omniglot_catalog), "val")
    b = BatchBuilder(str(omniglot_catalog), "val", 1, batch_size=1000, seed=3)
    m = len(labels)
    steps = -(-m // 1000)  # the batches covering epoch 0 (the last one runs into epoch 1)
    seen = np.concatenate([b.indices(i) for i in range(steps)])[:m]
    assert np.array_equal(np.sort(seen), np.arange(m))
    assert not np.array_equal(seen, np.arange(m))
    out = b({"id": np.array([5])})
    again = BatchBuilder(str(omniglot_catalog), "val", 1, batch_size=1000, seed=3)({"id": np.array([5])})
    assert out["img"].shape == (1, 1000, 1, 28, 28) and out["img"].dtype == np.uint8
    assert np.array_equal(out["img"], again["img"]) and np.array_equal(out["gt_label"], again["gt_label"])
    assert np.array_equal(out["gt_label"][0], labels[b.indices(5)])
    other_seed = BatchBuilder(str(omniglot_catalog), "val", 1, batch_size=1000, seed=4)
    assert not np.array_equal(other_seed.indices(5), b.indices(5))


def test_augmentation_is_per_image_reproducible_and_keeps_shape():
    imgs = _caltech_images()
    aug = Augmenter("standard", 32, seed=0)
    a, b = aug(imgs, key=7), aug(imgs, key=7)
    assert a.shape == imgs.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)  # same key, same images
    assert not np.array_equal(a, aug(imgs, key=8))
    assert not np.array_equal(a, imgs)
    assert Augmenter("none", 32)(imgs, key=1) is imgs
    flip = Augmenter("flip", 32, seed=1)(imgs, key=0)
    for x, y in zip(imgs, flip):  # each image is itself or its mirror
        assert np.array_equal(x, y) or np.array_equal(x[:, :, ::-1], y)
    gray = Augmenter("standard", 28)(imgs[:, :1], key=0)  # 1-channel images work too
    assert gray.shape == (4, 1, 28, 28)  # RandomResizedCrop to the configured side
    state = torch.random.get_rng_state()
    aug(imgs, key=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    with pytest.raises(ValueError, match="unknown augmentation 'jitter'"):
        train_transform("jitter", 32)


@pytest.mark.slow
def test_baseline_pretrains_on_batches_then_meta_baseline_starts_from_it(omniglot_catalog, ray_local, tmp_path):
    from fewray.platform.base_classes import resolve_base_classes
    from fewray.platform.train import run_metatrain

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(omniglot_catalog, *BASELINE, "train.num_steps=12", "train.val_interval=6",
                      "train.log_interval=6", "val.num_tasks=20")
    n_base = int(read_labels(str(omniglot_catalog), "train").max()) + 1
    with pytest.raises(ConfigError, match=f"model.head.num_classes is 5 but the train split .* has {n_base} classes"):
        resolve_base_classes(tiny_config(omniglot_catalog, *BASELINE, "model.head.num_classes=5"))
    # (resuming in the same output dir, also with a larger num_steps, is tested by test_faults' re-run)
    result = run_metatrain(cfg, tmp_path / "baseline", tracking_uri=uri)
    assert result["resumed_from_step"] == 0
    state = load_checkpoint(result["latest_checkpoint"])
    assert state["step"] == 12
    assert state["model"]["head.fc.weight"].shape == (n_base, 64)  # one output per base class
    assert state["config"]["model"]["head"]["num_classes"] == n_base
    client = mlflow.tracking.MlflowClient(uri)
    steps = [m.step for m in client.get_metric_history(result["mlflow_run_id"], "batches_per_second")]
    assert steps == [6, 12]
    losses = [m.value for m in client.get_metric_history(result["mlflow_run_id"], "loss")]
    assert all(np.isfinite(losses))
    assert 0 <= result["best_val_accuracy_mean"] <= 100

    # meta-test from the config file as written (no head.num_classes): the pre-trained head's size comes
    # from the checkpoint, and each task fine-tunes its own 5-way head
    from fewray.platform.metatest import meta_test_checkpoint

    tested = meta_test_checkpoint(tiny_config(omniglot_catalog, *BASELINE, "test.num_tasks=10"),
                                  result["best_checkpoint"], num_workers=1, tracking_uri=uri)
    assert tested["num_tasks"] == 10 and 0.0 <= tested["accuracy_mean"] <= 100.0

    # stage 2: MetaBaseline starts from the Baseline's train_result.json (its best checkpoint's backbone)
    from fewray.algorithms import build_classifier
    from fewray.apis import init_classifier
    from fewray.platform.checkpoint import save_checkpoint

    meta = tiny_config(omniglot_catalog, "model.type=MetaBaseline", "model.head={type: MetaBaselineHead}",
                       f"model.pretrained_backbone={tmp_path / 'baseline' / 'train_result.json'}")
    start = build_classifier(meta.model)
    best = load_checkpoint(result["best_checkpoint"])["model"]
    assert torch.equal(start.backbone.state_dict()["layers.0.0.weight"], best["backbone.layers.0.0.weight"])
    # a MetaBaseline checkpoint loads even where the Baseline run is gone (another node)
    save_checkpoint(tmp_path / "mb", model=start.state_dict(), step=0, config=meta.to_dict())
    shutil.rmtree(tmp_path / "baseline")
    model = init_classifier(None, tmp_path / "mb")
    assert torch.equal(model.backbone.state_dict()["layers.0.0.weight"], best["backbone.layers.0.0.weight"])
