"""Meta-training with Ray Train (2 DDP workers) logged to a real MLflow server, read back with MlflowClient."""

import json

import matplotlib.image as mpimg
import pytest
from mlflow.tracking import MlflowClient

from fewray.platform.train import run_metatrain
from conftest import tiny_config


@pytest.mark.slow
def test_train_run_reads_back_from_mlflow_server(omniglot_catalog, ray_local, mlflow_server, tmp_path):
    cfg = tiny_config(omniglot_catalog, "train.num_workers=2", "train.num_steps=20", "train.val_interval=10",
                      "tracking.experiment=server-test")
    result = run_metatrain(cfg, tmp_path / "out", tracking_uri=mlflow_server.uri)
    assert json.loads((tmp_path / "out" / "train_result.json").read_text()) == result
    assert result["best_checkpoint"].endswith("checkpoint.pt")

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.params["train.num_workers"] == "2"
    assert run.data.params["model.backbone.type"] == "Conv4"
    loss = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in loss] == [5, 10, 15, 20]
    val = client.get_metric_history(run.info.run_id, "val_accuracy_mean")
    assert [m.step for m in val] == [10, 20]
    assert run.data.metrics["best_val_accuracy_mean"] == max(m.value for m in val)

    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoint", "plots", "config", "train_result.json"} <= arts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/checkpoint.pt"]
    local = client.download_artifacts(run.info.run_id, "plots/training_curves.png", str(tmp_path))
    img = mpimg.imread(local)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
