"""Meta-training with Ray Train (2 DDP workers, the shared ``trained`` run) read back with MlflowClient
through a real MLflow server started on its store."""

import json

import matplotlib.image as mpimg
from mlflow.tracking import MlflowClient

from conftest import MlflowServer


def test_train_run_reads_back_from_mlflow_server(trained, tmp_path):
    out = trained["work"] / "out"
    assert json.loads((out / "train_result.json").read_text()) == {k: v for k, v in trained.items() if k != "work"}
    assert trained["best_checkpoint"].endswith("checkpoint.pt")

    server = MlflowServer(tmp_path, backend_store_uri=f"sqlite:///{trained['work'] / 'mlflow.db'}")
    server.start()
    try:
        client = MlflowClient(server.uri)
        run = client.get_run(trained["mlflow_run_id"])
        assert run.data.params["train.num_workers"] == "2"
        assert run.data.params["model.backbone.type"] == "Conv4"
        loss = client.get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in loss] == [5, 10, 15, 20, 25, 30]
        val = client.get_metric_history(run.info.run_id, "val_accuracy_mean")
        assert [m.step for m in val] == [15, 30]
        assert run.data.metrics["best_val_accuracy_mean"] == max(m.value for m in val)

        # artifacts sit next to the sqlite store (not in ./mlruns of the directory the tests run from)
        assert run.info.artifact_uri.startswith((trained["work"] / "mlruns").as_uri())
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"checkpoint", "plots", "config", "train_result.json"} <= arts
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/checkpoint.pt"]
        local = client.download_artifacts(run.info.run_id, "plots/training_curves.png", str(tmp_path))
        img = mpimg.imread(local)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    finally:
        server.stop()
