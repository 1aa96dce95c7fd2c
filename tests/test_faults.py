"""Faults on a real multi-node Ray cluster on one machine (``ray.cluster_utils.Cluster``).

- a worker node removed in the middle of a meta-test: every task counted once, same accuracy;
- one meta-training that survives, in turn, a killed Ray Train worker (FailureConfig), an MLflow server
  stopped and started again, and a SIGTERM followed by a re-run with the same output directory (and 20 more
  steps: a finished or interrupted run is extended by raising train.num_steps).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from fewray.platform.runtime import free_port
from conftest import CONFIG, PYTHON, REPO, TINY, MlflowServer


@pytest.mark.slow
def test_worker_node_removed_during_metatest(trained, omniglot_catalog):
    proc = subprocess.run(
        [PYTHON, str(REPO / "tests" / "scenarios" / "metatest_node_loss.py"), trained["best_checkpoint"],
         str(omniglot_catalog)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["removed_node"], "no evaluation task was seen running: the node was not removed mid-run"
    assert out["alive_nodes"] == 2  # head + the surviving worker
    assert out["undisturbed"]["ids"] == out["disturbed"]["ids"] == list(range(10000))
    assert out["disturbed"]["num_tasks"] == 10000
    assert out["same_per_task"] and out["disturbed"]["mean"] == out["undisturbed"]["mean"]


def _checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.parent.name.split("_")[1]) for p in out.glob("metatrain/checkpoint_*/checkpoint.pt"))


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, beyond: int, timeout: float = 240) -> int:
    """Block until a checkpoint with step > ``beyond`` exists; return the newest step."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = _checkpoint_steps(out)
        if steps and steps[-1] > beyond:
            return steps[-1]
        assert proc.poll() is None, f"training ended early (exit {proc.returncode})"
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint beyond step {beyond} within {timeout}s")


def _train_workers(cluster) -> list[psutil.Process]:
    found = []
    for node in cluster.list_all_nodes():
        for info in node.all_processes.get("raylet", []):
            for child in psutil.Process(info.process.pid).children(recursive=True):
                try:
                    if "RayTrainWorker" in " ".join(child.cmdline()):
                        found.append(child)
                except psutil.NoSuchProcess:
                    pass
    return found


@pytest.fixture
def cluster(monkeypatch):
    from ray.cluster_utils import Cluster

    # Ray Train's PlacementGroupCleaner asks the state API about its controller; point every process of this
    # cluster at its own dashboard, not at whichever Ray was started last on the machine (another test's)
    port = free_port()
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{port}")
    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 1, "dashboard_host": "127.0.0.1", "dashboard_port": port})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


@pytest.mark.slow
def test_training_survives_worker_kill_mlflow_restart_and_sigterm(omniglot_catalog, cluster, tmp_path):
    server_dir = tmp_path / "mlflow"
    server_dir.mkdir()
    server = MlflowServer(server_dir)
    server.start()
    out = tmp_path / "run"
    args = [PYTHON, str(REPO / "pipelines" / "metatrain.py"), "--config", str(CONFIG), "--output-dir", str(out),
            "--tracking-uri", server.uri]
    for kv in [*TINY, f"data.root={omniglot_catalog}", "train.num_steps=100", "train.val_interval=20",
               "train.max_failures=2", "train.keep_checkpoints=10"]:
        args += ["--set", kv]
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONUNBUFFERED": "1"}
    log1 = open(tmp_path / "first.log", "w+")
    proc = subprocess.Popen(args, stdout=log1, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        # 1. kill the Ray Train worker process after the first checkpoint
        at_kill = _wait_for_checkpoint(out, proc, 0)
        time.sleep(2)  # let Ray Train register the reported checkpoint before its worker dies
        workers = _train_workers(cluster)
        assert len(workers) == 1, workers
        workers[0].kill()
        # 2. stop MLflow once training got going again, keep it down for a whole checkpoint interval
        down_from = _wait_for_checkpoint(out, proc, at_kill)
        server.stop()
        down_until = _wait_for_checkpoint(out, proc, down_from)
        server.start()
        # 3. SIGTERM once a checkpoint was written after the server came back
        at_term = _wait_for_checkpoint(out, proc, down_until)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 143, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    first = (tmp_path / "first.log").read_text()
    assert "error: terminated by SIGTERM (re-run the same command to resume)" in first
    assert "Ray Train worker restarted: resuming from the checkpoint of step" in first
    assert f"MLflow tracking server {server.uri} unreachable" in first
    assert at_term < 100

    # 4. the same command again, asking for 20 more steps, resumes (same output dir, same MLflow run) and
    #    finishes at step 120
    again = subprocess.run([*args, "--set", "train.num_steps=120"], capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=400)
    try:
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        result = json.loads((out / "train_result.json").read_text())
        assert result["resumed_from_step"] >= at_term
        assert _checkpoint_steps(out)[-1] == 120

        from mlflow.tracking import MlflowClient

        client = MlflowClient(server.uri)
        run_id = result["mlflow_run_id"]
        assert run_id == (out / "mlflow_run_id").read_text().strip()
        restored = [m.value for m in client.get_metric_history(run_id, "restored_from_step")]
        assert restored and min(restored) >= at_kill  # lost at most one checkpoint interval
        loss_steps = {m.step for m in client.get_metric_history(run_id, "loss")}
        assert loss_steps == set(range(5, 121, 5)), sorted(loss_steps)  # the outage window included
        val_steps = {m.step for m in client.get_metric_history(run_id, "val_accuracy_mean")}
        assert val_steps == set(range(20, 121, 20)), sorted(val_steps)
    finally:
        server.stop()
