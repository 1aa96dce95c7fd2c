"""The README's "On a Ray cluster" section, as written: its command lines, read from README.md, run by bash
in a user's fresh shell (PATH without any venv, no VIRTUAL_ENV, no Ray or MLflow variables):
cluster/local/start.sh (a head and a worker node on 127.0.0.1 plus an MLflow server), the exports it prints,
`.venv/bin/ray job submit` of pipelines/metatest.py logging to that server, and cluster/local/stop.sh.

Only this test's own values replace the README's: the ports, the checkpoint, the catalog, the output file,
and ``--num-tasks 100`` appended to keep it short."""

import json
import os
import random
import re
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from conftest import PYTHON, REPO

#: a login shell's PATH on Debian/Ubuntu, without the venv that runs the tests
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def readme_cluster_commands() -> list[str]:
    """The command lines of the first ``bash`` block of the README's "On a Ray cluster" section, with
    backslash continuations joined: start.sh, the export line, ray job submit, stop.sh."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### On a Ray cluster"):]
    block = section[section.index("```bash\n") + len("```bash\n"):]
    block = block[:block.index("```")]
    commands = [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    assert len(commands) == 4, commands
    assert commands[0].startswith("cluster/local/start.sh") and commands[3] == "cluster/local/stop.sh", commands
    assert commands[1].startswith("export RAY_ADDRESS=") and " job submit " in commands[2], commands
    return commands


def _replace(command: str, old: str, new: str) -> str:
    assert old in command, f"{old!r} is no longer in the README's line {command!r}"
    return command.replace(old, new)


def quiet_ports() -> dict[str, str]:
    """start.sh's port settings, each port free now and outside both the kernel's ephemeral range (where every
    outgoing connection of the suite's other servers, Rays and browsers takes its local port, so a port free now can be
    taken a second later; a CI run lost the worker's agent port that way) and Ray's worker ports (10002-19999):
    GCS, dashboard and MLflow one port each, the two nodes' agents a block of 4 each (see start.sh)."""
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    rng = random.Random()
    ports: dict[str, str] = {}
    taken: set[int] = set()
    for name, size in (("GCS_PORT", 1), ("DASHBOARD_PORT", 1), ("MLFLOW_PORT", 1),
                       ("HEAD_AGENT_PORT", 4), ("WORKER_AGENT_PORT", 4)):
        while True:
            base = rng.randrange(20000, low - size)
            block = set(range(base, base + size))
            if not block & taken and all(_free(port) for port in block):
                break
        taken |= block
        ports[name] = str(base)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _fresh_shell(ports: dict[str, str], state: Path, tmp_path: Path) -> dict[str, str]:
    """A user's fresh shell: no venv on PATH, nothing of Ray or MLflow set; start.sh's settings for the ports and
    its state folder (and VENV when the tests run from another venv than the README's)."""
    env = {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", str(tmp_path)), "LANG": "C.UTF-8",
           **ports, "FEWRAY_LOCAL_CLUSTER_DIR": str(state)}
    if os.environ.get("TMPDIR"):
        env["TMPDIR"] = os.environ["TMPDIR"]
    venv = Path(PYTHON).parent.parent
    if venv.resolve() != (REPO / ".venv").resolve():
        env["VENV"] = str(venv)
    return env


def _nodes_seen_by_state_api_in_a_task(ray) -> list[str]:
    @ray.remote(num_cpus=0)
    def nodes() -> list[str]:
        from ray.util.state import list_nodes

        return sorted(n.node_id for n in list_nodes())

    return ray.get(nodes.remote(), timeout=60)


@pytest.mark.slow
def test_readme_cluster_section_with_local_scripts(trained, omniglot_catalog, ray_local, tmp_path):
    start_line, export_line, submit_line, stop_line = readme_cluster_commands()
    ports = quiet_ports()
    state = tmp_path / "cluster"
    env = _fresh_shell(ports, state, tmp_path)
    if "VENV" in env:
        submit_line = _replace(submit_line, ".venv/bin/ray ", f"{env['VENV']}/bin/ray ")
    export_line = _replace(export_line, "127.0.0.1:8265", f"127.0.0.1:{ports['DASHBOARD_PORT']}")
    export_line = _replace(export_line, "127.0.0.1:5000", f"127.0.0.1:{ports['MLFLOW_PORT']}")
    out = tmp_path / "metatest_cluster.json"
    train_result = Path(trained["work"]) / "out" / "train_result.json"
    assert train_result.is_file()
    for old, new in (("$PWD/runs/protonet/train_result.json", str(train_result)),
                     ("$PWD/data/omniglot", str(omniglot_catalog)),
                     ("$PWD/runs/protonet/metatest_cluster.json", str(out))):
        submit_line = _replace(submit_line, old, new)
    submit_line += " --num-tasks 100"

    def bash(script: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)

    start = bash(start_line, 300)
    pids = [int((state / f"{n}.pid").read_text()) for n in ("head", "worker", "mlflow") if (state / f"{n}.pid").exists()]
    try:
        assert start.returncode == 0, start.stdout[-3000:] + start.stderr[-3000:]
        assert start.stdout.strip().splitlines()[-1] == export_line  # the README's line, with these ports
        # start.sh's `ray start` recorded its head in /tmp/ray/ray_current_cluster; the state API inside this
        # session's local Ray (Ray Train's PlacementGroupCleaner uses it) must still see this Ray, not that one
        assert _nodes_seen_by_state_api_in_a_task(ray_local) == sorted(n["NodeID"] for n in ray_local.nodes())
        submit = bash(f"set -e\n{export_line}\n{submit_line}", 400)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert "5-way 1-shot: accuracy" in submit.stdout
        # the job's output is the pipeline's: no line of Ray's core worker (its logs stay in the nodes' files)
        noise = [line for line in (submit.stdout + submit.stderr).splitlines()
                 if re.search(r"core_worker|\.cc:\d+|\(\S* ?pid=\d+", line)]
        assert not noise, noise
        result = json.loads(out.read_text())
        assert result["num_tasks"] == 100 and result["ways"] == 5 and result["shots"] == 1
        assert result["queries"] == 15 and result["seed"] == 0
        assert {"accuracy_mean", "accuracy_std", "ci95", "mlflow_run_id"} <= set(result)
        uri = f"http://127.0.0.1:{ports['MLFLOW_PORT']}"
        assert result["tracking_uri"] == uri  # the job logged to the cluster's server

        from mlflow.tracking import MlflowClient

        run = MlflowClient(uri).get_run(result["mlflow_run_id"])
        assert run.data.metrics["accuracy_mean"] == pytest.approx(result["accuracy_mean"])
    finally:
        stop = bash(stop_line, 300)
        left = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        for pid in left:  # what stop.sh missed, so that a failure here leaves no cluster behind
            try:
                proc = psutil.Process(pid)
                proc.terminate()
                proc.wait(30)
            except psutil.TimeoutExpired:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
    assert stop.returncode == 0, stop.stderr
    assert pids and not left


@pytest.mark.slow
def test_start_sh_names_a_taken_port_at_once_and_leaves_nothing_running(tmp_path):
    """A port of the worker node's agent held by another program: start.sh says which port could not be bound
    (Ray's agent stays alive without its HTTP server, so waiting would only time out), within seconds rather
    than its 120 s wait, and stops the MLflow server and the head it had started."""
    ports = quiet_ports()
    state = tmp_path / "cluster"
    holder = socket.socket()
    holder.bind(("127.0.0.1", int(ports["WORKER_AGENT_PORT"])))
    holder.listen()
    try:
        start = subprocess.run(["bash", "cluster/local/start.sh"], env=_fresh_shell(ports, state, tmp_path),
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        holder.close()
    assert start.returncode == 1, start.stdout + start.stderr
    lines = start.stderr.strip().splitlines()
    assert lines[0] == ("error: the Ray worker node could not bind a port (set the ports: see the top of "
                        "cluster/local/start.sh):"), start.stderr
    assert f"{ports['WORKER_AGENT_PORT']}): address already in use" in lines[1], start.stderr
    assert not list(state.glob("*.pid"))  # stop.sh ran: what start.sh started is gone
    # the MLflow server names the state folder, the head's and the worker's `ray start` the GCS port
    marks = (str(state), f"--port={ports['GCS_PORT']}", f"--address=127.0.0.1:{ports['GCS_PORT']}")
    started = [p.info["cmdline"] for p in psutil.process_iter(["cmdline", "status"])
               if p.info["status"] != psutil.STATUS_ZOMBIE and any(m in " ".join(p.info["cmdline"] or []) for m in marks)]
    assert not started, started
