"""Few-shot detection through the runtime (issue 15): a detection catalog of real coco_mini images, Faster R-CNN
base training with 2 DDP workers, TFA fine-tuning from it by surgery, evaluation fanned out to 1 and 2 Ray tasks
(identical COCOeval numbers), ``pipelines/detect.py``, and the one-line errors of mixing detection and
classification. Tiny: ~20 training images at 128 px, a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, SHARED_DATA, run_pipeline

torch.set_num_threads(1)

SPLIT = {"dataset": "coco_tiny", "class_splits": "coco",
         "train": [{"file": "coco_mini/annotations/instances_train2017.json", "part": "1/10"}],
         "val": [{"file": "coco_mini/annotations/instances_val2017.json", "part": "1/20"}],
         "test": [{"file": "coco_mini/annotations/instances_val2017.json", "part": "1/20"}]}


@pytest.fixture(scope="module")
def det_catalog(tmp_path_factory) -> Path:
    """A detection catalog of ~21 coco_mini train2017 images and ~10 val2017 ones (TFA's COCO class split)."""
    from fewray.data.detection.catalog import prepare_detection

    d = tmp_path_factory.mktemp("det")
    (d / "split.yaml").write_text(yaml.safe_dump(SPLIT))
    prepare_detection(SHARED_DATA, d / "coco_tiny", split_file=d / "split.yaml")
    return d / "coco_tiny"


def det_config(root: Path, path: Path, **over) -> Path:
    """The CPU base-training config's shape at 128 px and a few steps, written to ``path``."""
    cfg = yaml.safe_load((REPO / "configs/detection/faster_rcnn/lite0_fpn_coco_base_training.yaml").read_text())
    cfg["data"].update(root=str(root), image_size=128, min_size=96)
    cfg["model"].update(min_size=96, max_size=128, neck={"out_channels": 32}, representation_size=64,
                        rpn={"pre_nms_top_n_train": 200, "post_nms_top_n_train": 100, "pre_nms_top_n_test": 100,
                             "post_nms_top_n_test": 50}, roi={"batch_size_per_image": 64})
    cfg["train"].update(num_steps=4, val_interval=4, log_interval=2, torch_threads=1,
                        lr_schedule={"milestones": [3], "gamma": 0.1, "warmup_steps": 2})
    cfg["tracking"] = {"experiment": "det_tiny"}
    for key, value in over.items():
        section, name = key.split("__")
        cfg[section][name] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_base_training_fine_tuning_evaluation_and_detect(det_catalog, ray_local, tmp_path):
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base_cfg = det_config(det_catalog, tmp_path / "base.yaml", train__num_workers=2)
    r = run_pipeline("metatrain.py", "--config", str(base_cfg), "--output-dir", str(tmp_path / "base"),
                     "--tracking-uri", db, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    base = json.loads((tmp_path / "base" / "train_result.json").read_text())
    assert base["num_steps"] == 4 and "best_val_BASE_AP" in base
    state = torch.load(base["best_checkpoint"], weights_only=True)
    assert len(state["config"]["model"]["class_names"]) == 60  # data.classes: BASE_CLASSES

    # evaluation: one COCOeval over the merged detections, the same with 1 and 2 Ray tasks
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"eval{workers}.json"
        r = run_pipeline("evaluate.py", "--config", str(base_cfg), "--checkpoint", str(tmp_path / "base"
                         / "train_result.json"), "--num-workers", str(workers), "--output", str(out),
                         "--tracking-uri", db, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(json.loads(out.read_text()))
        assert outs[-1]["line"] in r.stdout
    keys = ("AP", "AP50", "AP75", "BASE_AP", "NOVEL_AP")
    assert [outs[0][k] for k in keys] == [outs[1][k] for k in keys]
    assert outs[0]["NOVEL_AP"] == 0.0  # a base-only detector predicts no novel class

    # TFA: 80 classes by surgery from the base checkpoint, a 1-shot set, all but the predictor frozen
    tfa_cfg = yaml.safe_load((REPO / "configs/detection/tfa/cos_lite0_fpn_coco_kshot.yaml").read_text())
    small = yaml.safe_load(base_cfg.read_text())
    tfa_cfg["data"] = {**small["data"], "classes": "ALL_CLASSES",
                       "few_shot": {"num_novel_shots": 1, "num_base_shots": 1, "seed": 0}}
    tfa_cfg["model"].update({k: small["model"][k] for k in ("min_size", "max_size", "neck", "representation_size",
                                                             "rpn", "roi")},
                            init_from=str(tmp_path / "base" / "train_result.json"))
    tfa_cfg["train"] = {**small["train"], "num_workers": 1}
    tfa_cfg["tracking"] = small["tracking"]
    (tmp_path / "tfa.yaml").write_text(yaml.safe_dump(tfa_cfg))
    r = run_pipeline("metatrain.py", "--config", str(tmp_path / "tfa.yaml"), "--output-dir", str(tmp_path / "tfa"),
                     "--tracking-uri", db, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    tfa = torch.load(json.loads((tmp_path / "tfa" / "train_result.json").read_text())["best_checkpoint"],
                     weights_only=True)
    assert len(tfa["config"]["model"]["class_names"]) == 80
    fc6 = "roi_heads.box_head.fc6.weight"
    assert torch.equal(tfa["model"][fc6], state["model"][fc6])  # frozen through fine-tuning

    # detect.py: drawn images and a JSON of boxes
    img = SHARED_DATA / "coco_mini" / "val2017"
    images = sorted(img.glob("*.jpg"))[:2]
    r = run_pipeline("detect.py", "--checkpoint", str(tmp_path / "tfa" / "train_result.json"), *map(str, images),
                     "--out", str(tmp_path / "drawn"), "--score-thr", "0.0")
    assert r.returncode == 0, r.stderr[-3000:]
    listing = json.loads((tmp_path / "drawn" / "detections.json").read_text())
    assert len(listing["images"]) == 2 and len(listing["class_names"]) == 80
    assert all((tmp_path / "drawn" / f"{p.stem}_det.jpg").is_file() for p in images)


@pytest.mark.slow
def test_detection_and_classification_checkpoints_do_not_mix(det_catalog, tmp_path):
    """A detection config given a classification checkpoint and the reverse: one line, exit 2, nothing written."""
    cls_ckpt = tmp_path / "cls" / "checkpoint.pt"
    cls_ckpt.parent.mkdir()
    torch.save({"model": {}, "config": {"model": {"type": "ProtoNet", "backbone": {"type": "Conv4"},
                                                  "head": {"type": "PrototypeHead"}}}, "step": 1}, cls_ckpt)
    det_cfg = det_config(det_catalog, tmp_path / "det.yaml")
    r = run_pipeline("evaluate.py", "--config", str(det_cfg), "--checkpoint", str(cls_ckpt), "--dry-run")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "was trained as model.type 'ProtoNet'" in r.stderr
    det_ckpt = tmp_path / "det" / "checkpoint.pt"
    det_ckpt.parent.mkdir()
    torch.save({"model": {}, "config": {"model": {"type": "FasterRCNN", "class_names": ["a"]}}, "step": 1}, det_ckpt)
    r = run_pipeline("metatest.py", "--config", str(REPO / "configs/classification/protonet_conv4_omniglot.yaml"),
                     "--checkpoint", str(det_ckpt), "--dry-run")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "FasterRCNN" in r.stderr
    r = run_pipeline("metatest.py", "--config", str(det_cfg), "--checkpoint", str(det_ckpt), "--dry-run")
    assert r.returncode == 2 and "evaluate it with pipelines/evaluate.py" in r.stderr, r.stderr
    assert not list(tmp_path.glob("**/result*.json"))


def test_a_k_shot_set_is_part_of_a_runs_identity(det_catalog, tmp_path):
    """Two fine-tunings of one base model on other K-shot sets are other data: --output-dir of one does not resume
    the other (the identity holds data.classes and data.few_shot)."""
    from fewray.platform.config import load_config
    from fewray.platform.preflight import check_same_identity, identity
    from fewray.platform.errors import CheckpointError

    path = det_config(det_catalog, tmp_path / "c.yaml")
    one = load_config(path, ["data.classes=ALL_CLASSES", "data.few_shot={num_novel_shots: 1, seed: 0}"]).to_dict()
    two = load_config(path, ["data.classes=ALL_CLASSES", "data.few_shot={num_novel_shots: 1, seed: 1}"]).to_dict()
    with pytest.raises(CheckpointError, match="data.few_shot.seed is 0 there, 1 here"):
        check_same_identity(identity(one), identity(two), "--output-dir X", "choose a new --output-dir")
    check_same_identity(identity(one), identity(one), "--output-dir X", "")


@pytest.mark.slow
def test_a_resumed_training_ends_with_the_weights_of_an_uninterrupted_one(det_catalog, ray_local, tmp_path):
    """Faster R-CNN draws random boxes every step (torchvision's RPN and RoI samplers): 4 steps in one go and 2 + 2
    steps (the second a re-run of the same command that resumes from the step-2 checkpoint, as the benchmark's
    chunked base training does) give identical weights. Before the steps' random state was a function of (seed,
    rank, step), a resume re-seeded the generator and the two runs parted after it."""
    from fewray.platform.checkpoint import CHECKPOINT_FILE
    from fewray.platform.train import list_checkpoints

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = det_config(det_catalog, tmp_path / "base.yaml", train__num_workers=1)

    def train(out: str, steps: int) -> dict:
        r = run_pipeline("metatrain.py", "--config", str(cfg), "--set", f"train.num_steps={steps}", "--output-dir",
                         str(tmp_path / out), "--tracking-uri", db, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        step, last = list_checkpoints(tmp_path / out)[-1]  # the last step's, whichever validated best
        assert step == steps
        return torch.load(last / CHECKPOINT_FILE, weights_only=True)

    whole = train("whole", 4)
    train("chunked", 2)
    resumed = train("chunked", 4)
    assert whole["step"] == resumed["step"] == 4
    trained = [k for k, v in whole["model"].items() if v.is_floating_point() and not k.startswith("backbone.body")]
    assert trained and all(torch.equal(whole["model"][k], resumed["model"][k]) for k in trained), \
        [k for k in trained if not torch.equal(whole["model"][k], resumed["model"][k])][:5]
