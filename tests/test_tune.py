"""Sweeps: the tune: config section, and a real Ray Tune sweep (OptunaSearch + ASHA over Ray Train trials)
logged to a real MLflow server as a parent run with nested child runs, read back through MlflowClient."""

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from fewray.platform.config import load_config
from fewray.platform.errors import ConfigError
from fewray.platform.plots import read_png_axes
from fewray.platform.tune import run_sweep, search_space, trial_config
from conftest import REPO, run_pipeline, tiny_config

TUNE_CONFIG = REPO / "configs" / "classification" / "protonet_conv4_omniglot_tune.yaml"
LR, TEMP = "train.optimizer.lr", "model.head.temperature"
# TPE's random start with seed 6 proposes lr 0.005 first and 1e-7 second: the second trial falls behind at the
# first meta-validation and ASHA (grace period 1, reduction factor 2) stops it there.
TINY_SWEEP = [
    "tune.seed=6", "tune.num_samples=2",
    "tune.search_space={train.optimizer.lr: {choice: [0.005, 1.0e-7]}, model.head.temperature: {loguniform: [0.5, 2.0]}}",
    "tune.resources_per_trial={num_workers: 1, cpus_per_worker: 1, torch_threads: 1}",
    "train.num_steps=20", "train.val_interval=10",
]


def test_shipped_sweep_config_searches_lr_and_temperature():
    cfg = load_config(TUNE_CONFIG)
    assert set(cfg.tune.search_space) == {LR, TEMP}
    assert cfg.tune.num_samples == 8 and cfg.tune.scheduler.type == "asha"
    space = search_space(cfg)
    assert type(space[LR]).__name__ == "Float" and type(space[TEMP]).__name__ == "Float"
    trial = trial_config(cfg.to_dict(), {LR: 0.002, TEMP: 0.3})
    assert trial.tune is None and trial.train.optimizer.lr == 0.002 and trial.model.head["temperature"] == 0.3


@pytest.mark.parametrize("override, message", [
    ("tune.searchspace={}", "unknown config key 'tune.searchspace'"),
    ("tune.search_space={train.optimizer.lr: {logunif: [0.001, 0.1]}}", "unknown search-space primitive 'logunif'"),
    ("tune.search_space={train.optimizer.lr: {loguniform: [0.001]}}", "loguniform expects 2 values, got 1"),
    ("tune.search_space={train.optimizer.lr: {loguniform: [0.1, 0.001]}}", "needs low < high"),
    ("tune.search_space={train.optimizer.rate: {loguniform: [0.001, 0.1]}}", "unknown config key 'train.optimizer.rate'"),
    ("tune.search_space={model.head.temp: {choice: [1, 2]}}", "model.head.temp"),
    ("tune.search_space={train.optimizer.lr: {uniform: [-1, 1]}}", "config key 'train.optimizer.lr'"),
    ("tune.search_space={train.optimizer.lr: 0.01}", "tune.search_space.train.optimizer.lr': Input should be a valid dictionary"),
    ("tune.scheduler={type: hyperband}", "tune.scheduler.type"),
])
def test_bad_tune_section_is_one_line_config_error(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as err:
        load_config(TUNE_CONFIG, [override])
    assert "\n" not in str(err.value)


def test_asha_without_room_to_stop_is_rejected_before_ray(omniglot_catalog, tmp_path):
    cfg = tiny_config(omniglot_catalog, *TINY_SWEEP, "tune.scheduler.grace_period=2")
    with pytest.raises(ConfigError, match="grace_period=2 leaves ASHA nothing to stop"):
        run_sweep(cfg, tmp_path / "sweep", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")


def test_tune_pipeline_needs_a_tune_section():
    proc = run_pipeline("tune.py", "--config", str(REPO / "configs/classification/protonet_conv4_omniglot.yaml"),
                        timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: the config has no 'tune:' section (search_space, metric, "
                                                "num_samples, ...)"]


@pytest.mark.slow
def test_sweep_parent_and_nested_trials_read_back_from_mlflow_server(omniglot_catalog, ray_local, mlflow_server,
                                                                      tmp_path):
    cfg = tiny_config(omniglot_catalog, *TINY_SWEEP, "tracking.experiment=sweep-test")
    summary = run_sweep(cfg, tmp_path / "sweep", tracking_uri=mlflow_server.uri)

    # the sweep: 2 trials, the second (lr 1e-7) stopped by ASHA after its first meta-validation
    assert summary["num_trials"] == 2 and summary["num_errors"] == 0
    by_lr = {t["params"][LR]: t for t in summary["trials"]}
    assert set(by_lr) == {0.005, 1e-7}
    good, bad = by_lr[0.005], by_lr[1e-7]
    assert (good["last_step"], good["stopped_early"]) == (20, False)
    assert (bad["last_step"], bad["stopped_early"]) == (10, True)
    assert summary["num_stopped_early"] == 1
    assert summary["best_trial_id"] == good["trial_id"] and summary["best_params"] == good["params"]
    assert json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())["best_trial_id"] == good["trial_id"]

    client = MlflowClient(mlflow_server.uri)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.tags["fewray.kind"] == "sweep"
    assert parent.data.params["tune.num_samples"] == "2"
    assert parent.data.metrics["num_stopped_early"] == 1.0
    assert parent.data.metrics["best_val_accuracy_mean"] == pytest.approx(good["best_accuracy_mean"])
    parent_arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_config.yaml", "sweep_summary.json", "sweep_summary.md", "plots", "config"} <= parent_arts

    # nested child runs: one per trial, with params, metric history, best checkpoint and curves
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2
    assert {c.info.run_id for c in children} == {good["run_id"], bad["run_id"]}
    for child in children:
        trial = good if child.info.run_id == good["run_id"] else bad
        assert child.info.status == "FINISHED"
        assert child.data.tags["fewray.trial_id"] == trial["trial_id"]
        assert child.data.tags["fewray.stopped_early"] == str(trial["stopped_early"]).lower()
        assert float(child.data.params[f"tune.{LR}"]) == trial["params"][LR]
        assert child.data.params["train.optimizer.lr"] == child.data.params[f"tune.{LR}"]
        val = client.get_metric_history(child.info.run_id, "val_accuracy_mean")
        assert [m.step for m in val] == ([10, 20] if trial is good else [10])
        assert child.data.metrics["best_val_accuracy_mean"] == pytest.approx(max(m.value for m in val))
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")][:2] == [5, 10]
        assert [a.path for a in client.list_artifacts(child.info.run_id, "checkpoint")] == ["checkpoint/checkpoint.pt"]
        png = client.download_artifacts(child.info.run_id, "plots/training_curves.png", str(tmp_path))
        assert [a["ylabel"] for a in read_png_axes(png)] == ["loss", "accuracy (%)"]

    # the sweep's plot: one panel per searched key against the metric
    png = client.download_artifacts(parent.info.run_id, "plots/hparams_vs_metric.png", str(tmp_path))
    axes = read_png_axes(png)
    assert [a["xlabel"] for a in axes] == [LR, TEMP]
    assert {a["ylabel"] for a in axes} == {"val accuracy_mean (%)"}

    # the exported best config is a plain metatrain config with the best values
    local = client.download_artifacts(parent.info.run_id, "best_config.yaml", str(tmp_path))
    raw = yaml.safe_load(open(local))
    assert "tune" not in raw
    best = load_config(local)
    assert best.train.optimizer.lr == 0.005
    assert best.model.head["temperature"] == pytest.approx(good["params"][TEMP])
    assert (best.train.num_steps, best.train.num_workers, best.train.torch_threads) == (20, 1, 1)
