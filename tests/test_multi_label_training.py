"""Multi-label classification as a training task (issue 14): ``ImageClassifier`` + a multi-label head trained by
the same runtime as every other task (Ray Data stream of multi-hot batches, Ray Train, checkpoints chosen by
validation mAP, MLflow), evaluated on a split by Ray tasks; catalogs from real coco128 images at 32x32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIG, REPO, SHARED_DATA, run_pipeline

from fewray.platform.config import config_from_dict, load_config
from fewray.data.multi_label import MultiLabelBatchBuilder, load_multi_label_split
from fewray.data.sources import prepare_multilabel
from fewray.platform.errors import ConfigError, DataError

torch.set_num_threads(1)

COCO128 = SHARED_DATA / "coco128"
SIZE = 32
#: coco128 cut in two by image id: 64 train and 64 val images
HALVES = {"train": [{"file": "instances_coco128.json", "part": "1/2"}],
          "val": [{"file": "instances_coco128.json", "part": "2/2"}]}


@pytest.fixture(scope="module")
def coco_catalog(tmp_path_factory) -> Path:
    """A multi-label catalog of the 128 real coco128 images at 32x32 (80 classes), split in halves by image id."""
    out = tmp_path_factory.mktemp("ml") / "coco128_ml"
    prepare_multilabel(COCO128, out, image_size=SIZE, splits=HALVES, dataset="coco128_halves")
    return out


@pytest.fixture(scope="module")
def fewshot_catalog(tmp_path_factory) -> Path:
    """A tiny few-shot catalog (one class per image): 3 classes x 4 RGB images in train and val."""
    from PIL import Image

    from fewray.data.catalog import encode_png, write_catalog_info, write_split

    root = tmp_path_factory.mktemp("fs") / "tiny"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        imgs = [encode_png(Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))) for _ in range(12)]
        write_split(root, split, {"image": imgs, "label": [i // 4 for i in range(12)],
                                  "class_name": [f"c{i // 4}" for i in range(12)]})
    write_catalog_info(root, {"dataset": "tiny", "image_size": SIZE, "channels": 3,
                              "splits": {s: {"classes": 3, "images": 12} for s in ("train", "val")}})
    return root


def ml_config(root: Path, *extra: str, steps: int = 6):
    """The frozen EfficientNet-Lite0 config's schedule shape on a Conv4 (fast on CPU), reading ``root``."""
    raw = {
        "name": "ml_tiny", "seed": 0,
        "data": {"dataset": "coco128", "root": str(root), "image_size": SIZE, "channels": 3, "augment": "flip"},
        "model": {"type": "ImageClassifier", "backbone": {"type": "Conv4", "in_channels": 3},
                  "head": {"type": "MultiLabelLinearClsHead", "num_classes": 80, "in_channels": 256}},
        "train": {"batch_size": 8, "num_steps": steps, "val_interval": 3, "log_interval": 3, "num_workers": 1,
                  "cpus_per_worker": 1, "torch_threads": 1, "optimizer": {"type": "Adam", "lr": 0.01}},
        "val": {"split": "val", "batch_size": 32, "metric": "mAP", "mode": "max"},
        "test": {"split": "val", "batch_size": 16},
        "tracking": {"experiment": "ml_tiny"},
    }
    from fewray.platform.config import apply_overrides

    return config_from_dict(apply_overrides(raw, list(extra)))


# ----------------------------------------------------------------------------------- catalog and stream

def test_split_file_parts_and_duplicates(coco_catalog, tmp_path):
    info = json.loads((coco_catalog / "catalog.json").read_text())
    ids = {s: load_multi_label_split(str(coco_catalog), s).image_ids for s in ("train", "val")}
    assert len(ids["train"]) == len(ids["val"]) == 64 and not set(ids["train"]) & set(ids["val"])
    assert max(map(int, ids["train"])) < min(map(int, ids["val"]))  # halves by image id
    assert info["dataset"] == "coco128_halves" and info["num_classes"] == 80
    assert info["splits"]["val"]["files"] == ["instances_coco128.json part 2/2"]
    # an image listed twice in a split is kept once; an image in two splits is refused
    out = prepare_multilabel(COCO128, tmp_path / "dup", image_size=8,
                             splits={"train": ["instances_coco128.json", HALVES["train"][0]]})
    assert out["splits"]["train"]["images"] == 128 and out["splits"]["train"]["duplicates_dropped"] == 64
    with pytest.raises(DataError, match=r"image id \d+ \(0+\d+\.jpg\) is in split 'train' .* and in split 'val'"):
        prepare_multilabel(COCO128, tmp_path / "leak", image_size=8,
                           splits={"train": ["instances_coco128.json"], "val": HALVES["val"]})
    with pytest.raises(DataError, match="part must be 'k/n'"):
        prepare_multilabel(COCO128, tmp_path / "bad", image_size=8,
                           splits={"train": [{"file": "instances_coco128.json", "part": "3/2"}]})


def test_loader_gives_the_catalogs_label_sets(coco_catalog):
    import pyarrow.parquet as pq

    data = load_multi_label_split(str(coco_catalog), "train")
    rows = pq.read_table(coco_catalog / "train.parquet", columns=["labels"]).column("labels").to_pylist()
    assert data.images.shape == (64, 3, SIZE, SIZE) and data.targets.shape == (64, 80)
    assert [np.flatnonzero(t).tolist() for t in data.targets] == rows and data.num_classes == 80


@pytest.mark.slow  # 17-37 s of Ray fan-out: kept out of the 3-minute "not slow" run
def test_batches_are_rebuilt_from_seed_and_batch_id(coco_catalog, ray_local):
    """Batch ``b`` depends on ``(seed, b)`` only: another builder (another worker) and the Ray Data stream resumed
    at batch 2 give the same images and targets; so 1 or 2 Ray Train workers (which share the ids of one stream
    between them) and any resume point train on the same batches."""
    from fewray.tasks import task_for

    cfg = ml_config(coco_catalog)
    one = MultiLabelBatchBuilder(str(coco_catalog), "train", 8, seed=0, augment="flip", image_size=SIZE)
    other = MultiLabelBatchBuilder(str(coco_catalog), "train", 8, seed=0, augment="flip", image_size=SIZE)
    for b in (0, 9):  # 9: the second epoch (64 images = 8 batches per epoch)
        x, y = one({"id": np.array([b])}), other({"id": np.array([b])})
        assert np.array_equal(x["img"], y["img"]) and np.array_equal(x["gt_label"], y["gt_label"])
    data = load_multi_label_split(str(coco_catalog), "train")
    assert np.array_equal(one({"id": np.array([3])})["gt_label"][0], data.targets[one.indices(3)])
    task = task_for(cfg)
    rows = sorted(task.dataset(cfg, 2, 5).take_all(), key=lambda r: r["batch_id"])  # a stream resumed at batch 2
    assert [r["batch_id"] for r in rows] == [2, 3, 4]
    for r in rows:
        want = one({"id": np.array([r["batch_id"]])})
        assert np.array_equal(r["img"], want["img"][0]) and np.array_equal(r["gt_label"], want["gt_label"][0])
    inputs = task.model_inputs({k: torch.from_numpy(np.array(v))[None] for k, v in rows[0].items()})
    assert inputs["img"].dtype == torch.float32 and inputs["gt_label"].shape == (8, 80)


def test_lr_mult_makes_one_parameter_group_per_multiplier(coco_catalog):
    from fewray.algorithms import build_classifier
    from fewray.platform.train import make_optimizer

    cfg = ml_config(coco_catalog, "train.optimizer.lr_mult={backbone: 0.1, backbone.layers.3: 0.5}")
    model = build_classifier(cfg.model)
    opt, _ = make_optimizer(model, cfg)
    lrs = {p: g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lrs[named["head.fc.weight"]] == 0.01
    assert lrs[named["backbone.layers.0.0.weight"]] == pytest.approx(0.001)
    assert lrs[named["backbone.layers.3.0.weight"]] == pytest.approx(0.005)  # the longest matching key wins
    assert len(make_optimizer(model, ml_config(coco_catalog))[0].param_groups) == 1  # no lr_mult: one group


# --------------------------------------------------------------------------------------- training

@pytest.mark.slow
def test_multi_label_trains_through_the_runtime_and_keeps_the_best_mAP(coco_catalog, ray_local, tmp_path):
    """A real training by run_metatrain (Ray Data stream, Ray Train, MLflow): validation reports mAP, the best
    checkpoint is the one with the highest validation mAP, and the Ray-task evaluation of that checkpoint on the
    val split gives its validation numbers again, for 1 and 2 Ray tasks."""
    from mlflow.tracking import MlflowClient

    from fewray.platform.evaluate import evaluate_checkpoint
    from fewray.platform.train import checkpoint_metrics, list_checkpoints, run_metatrain

    cfg = ml_config(coco_catalog)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    result = run_metatrain(cfg, tmp_path / "out", tracking_uri=uri)
    assert result["best_metric"]["name"] == "mAP" and result["best_metric"]["mode"] == "max"
    assert {"best_val_mAP", "best_val_CF1", "best_val_OF1"} <= set(result) and "best_val_accuracy_mean" not in result
    saved = json.loads((tmp_path / "out" / "train_result.json").read_text())
    assert saved["best_val_mAP"] == result["best_val_mAP"] == result["best_metric"]["value"]
    scored = {step: checkpoint_metrics(d) for step, d in list_checkpoints(tmp_path / "out")}
    assert sorted(scored) == [3, 6] and all(0.0 < m["mAP"] <= 100.0 for m in scored.values())
    best = max(scored, key=lambda s: (scored[s]["mAP"], s))
    assert result["best_step"] == best and result["best_val_mAP"] == scored[best]["mAP"]
    client = MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(result["mlflow_run_id"], "val_mAP")] == [3, 6]
    assert client.get_metric_history(result["mlflow_run_id"], "batches_per_second")
    runs = [evaluate_checkpoint(cfg, tmp_path / "out" / "train_result.json", split="val", num_workers=n,
                                tracking_uri=uri) for n in (1, 2)]
    for out in runs:
        assert out["num_images"] == 64 and out["mAP"] == pytest.approx(result["best_val_mAP"], abs=1e-3)
        assert out["OF1"] == pytest.approx(result["best_val_OF1"], abs=1e-3)


# ------------------------------------------------------------------------------------------ bad input

def test_a_few_shot_catalog_given_to_the_multi_label_task_is_one_line(fewshot_catalog, tmp_path):
    from fewray.platform.train import prepare_metatrain

    with pytest.raises(DataError, match=f"catalog {fewshot_catalog} is not a multi-label catalog"):
        prepare_metatrain(ml_config(fewshot_catalog), tmp_path / "out")
    cfg = REPO / "configs" / "multi_label" / "efficientnet_lite0_coco_frozen.yaml"
    proc = run_pipeline("metatrain.py", "--config", str(cfg), "--set", f"data.root={fewshot_catalog}",
                        "--set", f"data.image_size={SIZE}", "--output-dir", str(tmp_path / "o"), "--dry-run")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: catalog {fewshot_catalog} is not a multi-label catalog")
    assert not (tmp_path / "o").exists()


def test_a_multi_label_catalog_given_to_a_few_shot_model_is_one_line(coco_catalog, tmp_path):
    proc = run_pipeline("metatrain.py", "--config", str(CONFIG), "--set", f"data.root={coco_catalog}",
                        "--set", "data.channels=3", "--set", "model.backbone.in_channels=3",
                        "--output-dir", str(tmp_path / "o"), "--dry-run")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "has no column 'label'" in lines[0] and f"{coco_catalog} is a multi-label catalog" in lines[0]


def test_multi_label_config_mistakes_are_one_line(coco_catalog, tmp_path):
    from fewray.platform.evaluate import prepare_evaluation
    from fewray.platform.train import prepare_metatrain

    with pytest.raises(ConfigError, match=r"val.metric 'accuracy_mean' is not a validation metric \(one of mAP, CP"):
        ml_config(coco_catalog, "val.metric=accuracy_mean")
    with pytest.raises(ConfigError, match="val.metric 'mAP' is not a meta-validation metric"):
        load_config(CONFIG, ["val.metric=mAP"])
    with pytest.raises(ConfigError, match=f"model.head.num_classes is 20 but the multi-label catalog {coco_catalog} "
                                          f"has 80 classes"):
        prepare_metatrain(ml_config(coco_catalog, "model.head.num_classes=20"), tmp_path / "out")
    with pytest.raises(DataError, match="split 'test' not found in catalog"):
        prepare_metatrain(ml_config(coco_catalog, "val.split=test"), tmp_path / "out")
    with pytest.raises(ConfigError, match="model.type ProtoNet is neither a multi-label model nor a detector"):
        prepare_evaluation(load_config(CONFIG, [f"data.root={coco_catalog}"]), tmp_path / "nope.pt")
