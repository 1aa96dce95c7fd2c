"""What ``make demo`` shows a user: its steps, the training summary and the accuracy line, and none of Ray's
own logs (core worker ``.cc`` lines, ``(pid=...)`` worker lines, Ray Train's and Ray Data's messages,
deprecation warnings), which stay in Ray's log files unless ``FEWRAY_VERBOSE=1``.

The real Makefile target, with a tiny schedule (``DEMO_ARGS``), the session's Omniglot catalog (``CATALOG``,
so ``make`` skips building it), its run directory and MLflow store in ``tmp_path``, and output captured as a
user's terminal shows it when it is not a tty (a log, CI): stdout and stderr interleaved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, REPO

# 20 steps, one meta-validation of 20 tasks, a meta-test of 100 tasks (the demo config's schedule otherwise)
DEMO_ARGS = "--set train.num_steps=20 --set train.val_interval=20 --set val.num_tasks=20 --set test.num_tasks=100"

# Ray's own output: what must not reach the terminal
RAY_LINES = {
    "core worker": re.compile(r"core_worker|\.cc:\d+"),
    "worker prefix": re.compile(r"\(\S* ?pid=\d+"),  # (pid=123), (RayTrainWorker pid=123, ip=...)
    "glog line": re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"),
    "Ray's Python log format": re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING)\s"),
    "warning category": re.compile(r"DeprecationWarning|FutureWarning|deprecated", re.IGNORECASE),
    "Ray Data": re.compile(r"Progress bars disabled|Execution plan of Dataset|Starting execution of Dataset"),
    "Ray Train": re.compile(r"Reporting training result|Checkpoint successfully created|training worker group"),
    # MLflow's lines about its own store: a new sqlite file's tables and migrations
    "MLflow store": re.compile(r"INFO mlflow\.store|Creating initial MLflow database tables|alembic"),
}
RESULT = re.compile(r"^5-way 1-shot: accuracy \d{1,3}\.\d\d% ± \d+\.\d\d \(95% CI, 100 tasks\)$")


@pytest.mark.slow
def test_make_demo_shows_progress_and_result_not_rays_logs(omniglot_catalog, tmp_path):
    make = shutil.which("make")
    assert make, "make is needed (the README's entry point)"
    venv = Path(PYTHON).parent.parent
    demo_dir = tmp_path / "demo"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "RAY_AUTH_MODE": "disabled"}
    # a user's shell: make demo starts a Ray of its own; nothing of an outer `make test` (MAKEFLAGS) either
    for inherited in ("RAY_ADDRESS", "FEWRAY_VERBOSE", "PYTHONWARNINGS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(inherited, None)
    t0 = time.monotonic()
    # -o: the test's venv counts as installed (make must not re-install it when pyproject.toml is newer)
    proc = subprocess.run([make, "--no-print-directory", "-o", f"{venv}/.installed", "demo", f"VENV={venv}",
                           f"CATALOG={omniglot_catalog}", f"DEMO_DIR={demo_dir}", f"DEMO_ARGS={DEMO_ARGS}"],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    seconds = time.monotonic() - t0
    output = proc.stdout
    assert proc.returncode == 0, output[-4000:]
    lines = [line for line in output.splitlines() if line.strip()]

    noise = [(what, line) for line in lines for what, pattern in RAY_LINES.items() if pattern.search(line)]
    assert not noise, "Ray's or MLflow's own output reached the terminal:\n" + "\n".join(f"{w}: {l}" for w, l in noise)

    # progress: the two steps, where Ray runs (and where its logs went), the training summary, the result
    step1 = next(i for i, line in enumerate(lines) if line.startswith("demo 1/2: meta-training"))
    step2 = next(i for i, line in enumerate(lines) if line.startswith("demo 2/2: meta-test"))
    assert step1 < step2
    ray_lines = [line for line in lines if line.startswith("Ray: a new local Ray (")]
    assert len(ray_lines) == 2 and all("FEWRAY_VERBOSE=1" in line for line in ray_lines), ray_lines
    summary = output[output.index("{", output.index("demo 1/2")):output.index("\n}\n") + 2]
    assert json.loads(summary)["best_step"] == 20
    # training progress from the Ray Train worker: one line per meta-validation
    assert any(re.match(r"^step \d+/20: training loss \S+, meta-validation accuracy \d+\.\d\d% ± ", line)
               for line in lines[step1:step2]), lines[step1:step2]
    # the last two lines: the meta-test's accuracy, then where its run is in the MLflow UI (training has one too)
    ui_lines = [line for line in lines if line.startswith("MLflow run ")]
    assert len(ui_lines) == 2 and all("/model-metrics?workflowType=machine_learning" in line for line in ui_lines)
    assert RESULT.match(lines[-2]), lines[-2]
    assert lines[-1] == ui_lines[-1]
    result = json.loads((demo_dir / "metatest.json").read_text())
    assert result["num_tasks"] == 100 and lines[-2] == result["line"]
    assert result["mlflow_run_id"] in lines[-1] and f"/experiments/{result['mlflow_experiment_id']}/" in lines[-1]
    print(f"make demo (tiny schedule): {seconds:.0f} s, {len(lines)} lines:\n{output}")
