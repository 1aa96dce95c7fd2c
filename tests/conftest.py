"""Shared fixtures: the real Omniglot catalog, a local Ray, a trained checkpoint, a real MLflow server.

Everything is real: the catalog is built from the original release zips in ``../shared/data``,
Ray is a real local instance, MLflow servers are started on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FEWRAY_SHARED_DATA", REPO.parent / "shared" / "data"))
OMNIGLOT_RELEASE = SHARED_DATA / "omniglot"
CONFIG = REPO / "configs" / "classification" / "protonet_conv4_omniglot.yaml"
PYTHON = sys.executable

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")

# A tiny but real schedule used by the tests (small episodes, few steps).
TINY = [
    "train.ways=10", "train.shots=1", "train.queries=5", "train.num_steps=30", "train.val_interval=15",
    "train.log_interval=5", "train.torch_threads=1", "val.ways=5", "val.num_tasks=40",
    "test.num_tasks=200",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def once_per_run(tmp_path_factory, name: str, build) -> dict:
    """``build(directory)`` run once for the whole test run, its JSON result shared by every xdist worker.

    ``make test`` runs pytest with 2 xdist workers; each has its own session fixtures, so a session fixture
    that trains a model or builds the catalog would run twice. The first worker to ask builds it under a
    file lock in the run's common temp directory; the others wait for the lock and read the stored result.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    target, done = root / name, root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            target.mkdir(exist_ok=True)
            done.write_text(json.dumps(build(target), default=str))
        return json.loads(done.read_text())


@pytest.fixture(scope="session")
def omniglot_catalog(tmp_path_factory) -> Path:
    """The full Omniglot catalog (Vinyals protocol) built once from the real release zips."""
    assert (OMNIGLOT_RELEASE / "images_background.zip").is_file(), f"real Omniglot release missing in {OMNIGLOT_RELEASE}"
    from fewray.platform.data.omniglot import prepare_omniglot

    def build(directory: Path) -> dict:
        prepare_omniglot(OMNIGLOT_RELEASE, directory / "omniglot")
        return {"root": str(directory / "omniglot")}

    return Path(once_per_run(tmp_path_factory, "catalog", build)["root"])


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs for the in-process tests."""
    import ray

    from fewray.platform.runtime import init_ray

    init_ray("local", num_cpus=2)  # as the pipelines do: its own dashboard, never another Ray on the machine
    yield ray
    ray.shutdown()


def tiny_config(catalog: Path, *extra: str):
    """The benchmark config with the tiny schedule, reading ``catalog``."""
    from fewray.platform.config import load_config

    return load_config(CONFIG, [*TINY, f"data.root={catalog}", *extra])


@pytest.fixture(scope="session")
def trained(omniglot_catalog, ray_local, tmp_path_factory) -> dict:
    """A ProtoNet Conv4 meta-trained for a few steps with Ray Train (sqlite MLflow in ``work``), once per run.

    The run's ``train_result.json`` fields plus ``work``, the directory holding ``out/`` and ``mlflow.db``.
    """

    def build(work: Path) -> dict:
        from fewray.platform.train import run_metatrain

        result = run_metatrain(tiny_config(omniglot_catalog), work / "out", tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
        return {**result, "work": str(work)}

    result = once_per_run(tmp_path_factory, "trained", build)
    return {**result, "work": Path(result["work"])}


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite store in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        mlflow_bin = Path(PYTHON).parent / "mlflow"
        self.proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "server.log", "ab"),
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def mlflow_server(tmp_path):
    """A fresh MLflow tracking server on 127.0.0.1 for one test."""
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    server.stop()


def run_pipeline(script: str, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``pipelines/<script>`` as a user would, capturing output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([PYTHON, str(REPO / "pipelines" / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO)


def which(name: str) -> str:
    """An executable of the test environment (next to its python), else from PATH."""
    local = Path(PYTHON).parent / name
    return str(local) if local.exists() else shutil.which(name) or name


def pytest_collection_modifyitems(config, items) -> None:
    """Order the run for ``make test``'s two xdist workers: tests that need no trained model first, the
    slow ones of each group first, those that use the ``trained`` fixture last.

    xdist's work-stealing scheduler hands each worker a contiguous half of this list, so one worker starts
    on the trained model (about 100 s) while the other runs the long independent tests; a worker that runs
    dry steals short tests from the end of the other's queue. The order is stable otherwise (file order).
    """
    items.sort(key=lambda item: ("trained" in getattr(item, "fixturenames", ()),
                                 item.get_closest_marker("slow") is None))
