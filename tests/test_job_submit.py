"""`ray job submit` of pipelines/metatest.py against a head started with `ray start --head` on 127.0.0.1."""

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, free_port, which


@pytest.mark.slow
def test_ray_job_submit_metatest(trained, omniglot_catalog, tmp_path):
    gcs, dash, agent, agent_grpc, metrics = (free_port() for _ in range(5))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{Path(PYTHON).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [which("ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--disable-usage-stats",
         # another Ray (the test session's) may hold the default agent ports on this machine
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}"],
        env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                break
            except OSError:
                assert head.poll() is None and time.time() < deadline, (tmp_path / "head.log").read_text()[-3000:]
                time.sleep(1)
        out = tmp_path / "result.json"
        submit = [which("ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
                  "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--",
                  "python", "pipelines/metatest.py", "--config", "configs/classification/protonet_conv4_omniglot.yaml",
                  "--checkpoint", trained["best_checkpoint"], "--set", f"data.root={omniglot_catalog}",
                  "--num-tasks", "100", "--num-workers", "2", "--output", str(out),
                  "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
        while True:  # the dashboard answers before the head's job agent is up
            proc = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400)
            if "No available agent" not in proc.stderr or time.time() > deadline:
                break
            time.sleep(2)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        result = json.loads(out.read_text())
        assert result["num_tasks"] == 100 and result["ways"] == 5 and result["shots"] == 1
        assert result["queries"] == 15 and result["seed"] == 0
        assert {"accuracy_mean", "accuracy_std", "ci95", "mlflow_run_id"} <= set(result)
        assert "5-way 1-shot: accuracy" in proc.stdout
    finally:
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
