"""Config loading: typed validation with errors that name the key, and --set overrides."""

import pytest

from fewray.platform.config import load_config
from fewray.platform.errors import ConfigError
from conftest import CONFIG, REPO

SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))


def test_benchmark_config_loads():
    cfg = load_config(CONFIG)
    assert cfg.model.type == "ProtoNet"
    assert cfg.train.ways == 60 and cfg.test.num_tasks == 2000
    assert cfg.data.root.startswith("/")  # made absolute


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_shipped_config_loads(path):
    # the zoo's configs are only run by benchmarks/: a typo in one (a head argument, a key) fails here instead
    if path.parent.name == "retrieval":  # a retrieval config (pipelines/retrieve.py), not an experiment config
        from fewray.platform.retrieval import load_retrieval_config

        cfg = load_retrieval_config(path)
    elif path.name.endswith("_class_splits.yaml"):  # a detection class split (prepare_data.py detection --class-splits)
        from fewray.data.detection.prepare import named_class_splits

        splits = named_class_splits(str(path))
        assert "ALL_CLASSES" in splits and "NOVEL_CLASSES" in splits
        return
    elif path.name.endswith("_split.yaml"):  # a multi-label split file (prepare_data.py multilabel --split-file)
        from fewray.data.sources.multilabel import read_annotation_split_file

        entries, _ = read_annotation_split_file(path)
        assert {"train", "val", "test"} <= set(entries)
        return
    else:
        cfg = load_config(path)  # validates every key and builds the model's registered arguments
    if path.parent.name != "classification":  # the zoo: <method>/<name>.yaml is named <method>_<name>
        assert cfg.name == f"{path.parent.name}_{path.stem}"


def test_overrides_are_typed():
    cfg = load_config(CONFIG, ["train.num_steps=12", "train.optimizer.lr=0.01", "model.backbone.channels=[32,32]"])
    assert cfg.train.num_steps == 12
    assert cfg.train.optimizer.lr == pytest.approx(0.01)
    assert cfg.model.backbone["channels"] == [32, 32]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=0.1", "unknown config key 'train.lr'"),
        ("train.ways=many", "config key 'train.ways'"),
        ("test.shots=0", "config key 'test.shots'"),
        ("test.ways=1", "config key 'test.ways'"),
        ("model.backbone.widht=3", "unknown config key 'model.backbone.widht'"),
        ("model.backbone.in_channels=grey", "config key 'model.backbone.in_channels'"),
        ("model.type=NoSuchNet", "unknown classifier type 'NoSuchNet'"),
        ("bogus=1", "unknown config key 'bogus'"),
        ("model.inner_lr=0.1", "unknown config key 'model.inner_lr'"),  # ProtoNet has no inner loop
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  ways: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_classifier_keyword_arguments_are_config_keys():
    cfg = load_config(CONFIG, ["model.type=MAML", "model.head={type: LinearHead, num_classes: 5}",
                               "model.inner_lr=0.1", "model.first_order=true"])
    assert cfg.model.model_dump()["inner_lr"] == 0.1 and cfg.model.model_dump()["first_order"] is True
    with pytest.raises(ConfigError, match="config key 'model.inner_lr'"):
        load_config(CONFIG, ["model.type=MAML", "model.head={type: LinearHead}", "model.inner_lr=fast"])


def test_val_metric_picks_the_best_checkpoint_and_is_checked(tmp_path):
    cfg = load_config(CONFIG, ["val.metric=ci95", "val.mode=min"])
    assert (cfg.val.metric, cfg.val.mode) == ("ci95", "min")
    with pytest.raises(ConfigError, match="val.metric 'recall' is not a meta-validation metric"):
        load_config(CONFIG, ["val.metric=recall"])
    with pytest.raises(ConfigError, match="tune.metric 'loss' is not a meta-validation metric"):
        load_config(CONFIG.parent / "protonet_conv4_omniglot_tune.yaml", ["tune.metric=loss"])

    from fewray.platform.checkpoint import save_checkpoint
    from fewray.platform.train import RUN_NAME, best_checkpoint

    for step, acc, ci in ((10, 60.0, 2.0), (20, 70.0, 3.0), (30, 65.0, 1.0)):
        save_checkpoint(tmp_path / RUN_NAME / f"checkpoint_{step:07d}", model={}, step=step,
                        metrics={"accuracy_mean": acc, "ci95": ci})
    assert best_checkpoint(tmp_path)[1]["step"] == 20
    assert best_checkpoint(tmp_path, "ci95", "min")[1]["step"] == 30


def test_a_training_step_sums_the_loss_dict():
    import torch

    from fewray.platform.train import sum_losses

    total, logged = sum_losses({"loss_cls": torch.tensor(0.5, requires_grad=True), "loss_box": torch.tensor(0.25),
                                "accuracy": torch.tensor(0.75)})
    assert float(total) == 0.75 and total.requires_grad
    assert logged == {"loss_cls": 0.5, "loss_box": 0.25, "accuracy": 75.0, "loss": 0.75}
    with pytest.raises(ValueError, match="has no loss"):
        sum_losses({"accuracy": torch.tensor(1.0)})
