"""The README's "On a Ray cluster" section, as written: cluster/local/start.sh (a head and a worker node on
127.0.0.1 plus an MLflow server), `ray job submit` of pipelines/metatest.py logging to that server, stop.sh."""

import json
import os
import subprocess
from pathlib import Path

import psutil
import pytest

from fewray.platform.runtime import free_port
from conftest import PYTHON, REPO


def _nodes_seen_by_state_api_in_a_task(ray) -> list[str]:
    @ray.remote(num_cpus=0)
    def nodes() -> list[str]:
        from ray.util.state import list_nodes

        return sorted(n.node_id for n in list_nodes())

    return ray.get(nodes.remote(), timeout=60)


@pytest.mark.slow
def test_readme_cluster_section_with_local_scripts(trained, omniglot_catalog, ray_local, tmp_path):
    ports = {k: str(free_port()) for k in ("GCS_PORT", "DASHBOARD_PORT", "MLFLOW_PORT")}
    # agent ports come in blocks of 4 (see start.sh); pick bases well apart from each other
    ports["HEAD_AGENT_PORT"], ports["WORKER_AGENT_PORT"] = "52905", "52915"
    state = tmp_path / "cluster"
    env = {**os.environ, **ports, "VENV": str(Path(PYTHON).parent.parent), "FEWRAY_LOCAL_CLUSTER_DIR": str(state),
           "PATH": f"{Path(PYTHON).parent}:{os.environ['PATH']}"}
    for inherited in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):  # not in a user's fresh shell
        env.pop(inherited, None)
    start = subprocess.run(["bash", str(REPO / "cluster" / "local" / "start.sh")], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    pids = [int((state / f"{n}.pid").read_text()) for n in ("head", "worker", "mlflow") if (state / f"{n}.pid").exists()]
    try:
        assert start.returncode == 0, start.stdout[-3000:] + start.stderr[-3000:]
        exports = start.stdout.strip().splitlines()[-1]
        assert exports.startswith("export ")
        for kv in exports.split()[1:]:
            k, v = kv.split("=", 1)
            env[k] = v
        assert env["RAY_ADDRESS"] == f"http://127.0.0.1:{ports['DASHBOARD_PORT']}"
        # start.sh's `ray start` recorded its head in /tmp/ray/ray_current_cluster; the state API inside this
        # session's local Ray (Ray Train's PlacementGroupCleaner uses it) must still see this Ray, not that one
        assert _nodes_seen_by_state_api_in_a_task(ray_local) == sorted(n["NodeID"] for n in ray_local.nodes())
        out = tmp_path / "metatest_cluster.json"
        # the README's command (paths of this test's checkpoint and catalog)
        submit = subprocess.run(
            ["ray", "job", "submit", "--working-dir", ".", "--runtime-env", "cluster/runtime_env.yaml", "--",
             "python", "pipelines/metatest.py", "--config", "configs/classification/protonet_conv4_omniglot.yaml",
             "--checkpoint", trained["best_checkpoint"], "--set", f"data.root={omniglot_catalog}",
             "--num-tasks", "100", "--output", str(out)],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert "5-way 1-shot: accuracy" in submit.stdout
        result = json.loads(out.read_text())
        assert result["num_tasks"] == 100 and result["ways"] == 5 and result["shots"] == 1
        assert result["queries"] == 15 and result["seed"] == 0
        assert {"accuracy_mean", "accuracy_std", "ci95", "mlflow_run_id"} <= set(result)
        assert result["tracking_uri"] == env["MLFLOW_TRACKING_URI"]  # the job logged to the cluster's server

        from mlflow.tracking import MlflowClient

        run = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(result["mlflow_run_id"])
        assert run.data.metrics["accuracy_mean"] == pytest.approx(result["accuracy_mean"])
    finally:
        stop = subprocess.run(["bash", str(REPO / "cluster" / "local" / "stop.sh")], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert stop.returncode == 0, stop.stderr
    assert pids and not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
