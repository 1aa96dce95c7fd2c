"""The MLflow Model Registry on a real MLflow server: register a trained checkpoint, load models:/NAME/VERSION
back (weights only), meta-test it at several shot counts through the pipeline, and the one-line errors."""

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from fewray.platform.checkpoint import load_checkpoint
from fewray.platform.errors import CheckpointError, ConfigError
from fewray.platform.metatest import meta_test_checkpoint
from fewray.platform.model_registry import load_registered_checkpoint, parse_model_uri, register_checkpoint
from fewray.platform.plots import read_png_axes
from conftest import CONFIG, run_pipeline, tiny_config

NAME = "protonet-omniglot-test"


def test_parse_model_uri():
    assert parse_model_uri("models:/a-b/3") == ("a-b", "3", None)
    assert parse_model_uri("models:/a/latest") == ("a", "latest", None)
    assert parse_model_uri("models:/a@champion") == ("a", None, "champion")
    with pytest.raises(CheckpointError, match="expected models:/NAME/VERSION"):
        parse_model_uri("models:/only-a-name")


@pytest.mark.slow
def test_register_load_and_metatest_registered_model(trained, omniglot_catalog, ray_local, mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server.uri)
    exp = client.create_experiment("registry-test")
    run_id = client.create_run(exp).info.run_id

    first = register_checkpoint(trained["best_checkpoint"], NAME, run_id, mlflow_server.uri)
    second = register_checkpoint(trained["work"] / "out" / "train_result.json", NAME, run_id, mlflow_server.uri)
    assert (first["uri"], second["uri"]) == (f"models:/{NAME}/1", f"models:/{NAME}/2")
    version = client.get_model_version(NAME, "1")
    assert version.run_id == run_id
    arts = {a.path for a in client.list_artifacts(run_id, "model")}
    assert {"model/state_dict.pth", "model/config.yaml", "model/fewray.json"} <= arts

    # the registered weights are the checkpoint's weights, read with weights_only=True
    original = load_checkpoint(trained["best_checkpoint"])
    state, path = load_registered_checkpoint(f"models:/{NAME}/1", tmp_path / "dl", tracking_uri=mlflow_server.uri)
    assert path.name == "state_dict.pth" and "optimizer" not in state
    assert state["step"] == original["step"] and state["config"] == original["config"]
    assert state["model"].keys() == original["model"].keys()
    assert all(torch.equal(state["model"][k], original["model"][k]) for k in original["model"])

    # unknown name / version / alias: one line naming it
    for uri, message in [("models:/no-such-model/1", "no registered model named 'no-such-model'"),
                         (f"models:/{NAME}/7", f"registered model '{NAME}' has no version 7"),
                         (f"models:/{NAME}@champion", f"registered model '{NAME}' has no alias 'champion'")]:
        with pytest.raises(CheckpointError, match=message) as err:
            load_registered_checkpoint(uri, tmp_path / "x", tracking_uri=mlflow_server.uri)
        assert "\n" not in str(err.value)

    # the pipeline meta-tests models:/NAME/VERSION at 1 and 5 shots in one run, with an accuracy-vs-shots plot
    # (the val split: a third of the test split's images to embed, three times)
    cfg = tiny_config(omniglot_catalog, "test.num_tasks=60", "test.split=val", "tracking.experiment=registry-test")
    direct = meta_test_checkpoint(cfg, trained["best_checkpoint"], num_workers=2, tracking_uri=mlflow_server.uri)
    out = tmp_path / "shots.json"
    proc = run_pipeline(
        "metatest.py", "--config", str(CONFIG), "--checkpoint", f"models:/{NAME}/1", "--shots", "1,5",
        "--num-tasks", "60", "--split", "val", "--num-workers", "2", "--tracking-uri", mlflow_server.uri, "--output", str(out),
        "--set", f"data.root={omniglot_catalog}", "--set", "tracking.experiment=registry-test",
        env={"RAY_ADDRESS": ""}, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("5-way 1-shot: accuracy ") and lines[-1].startswith("5-way 5-shot: accuracy ")
    result = json.loads(out.read_text())
    assert [r["shots"] for r in result["results"]] == [1, 5] and result["checkpoint"] == f"models:/{NAME}/1"
    assert result["results"][0]["accuracy_mean"] == pytest.approx(direct["accuracy_mean"])  # same weights
    assert result["results"][1]["accuracy_mean"] > result["results"][0]["accuracy_mean"]
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.metrics["accuracy_mean_5shot"] == pytest.approx(result["results"][1]["accuracy_mean"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy_mean")] == [1, 5]
    png = client.download_artifacts(run.info.run_id, "plots/accuracy_vs_shots.png", str(tmp_path))
    (ax,) = read_png_axes(png)
    assert (ax["xlabel"], ax["ylabel"]) == ("shots (K)", "accuracy (%)")
    hists = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/task_accuracy_hist_1shot.png", "plots/task_accuracy_hist_5shot.png"} <= hists


@pytest.mark.slow  # 17-37 s of Ray fan-out: kept out of the 3-minute "not slow" run
def test_bad_registered_model_name_fails_before_training():
    proc = run_pipeline("metatrain.py", "--config", str(CONFIG), "--register-model", "a/b", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: bad registered model name 'a/b' (non-empty, no '/', '@' or spaces)"]
    with pytest.raises(ConfigError):
        register_checkpoint("unused.pt", "", "run")
