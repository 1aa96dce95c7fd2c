"""Shared fixtures: the real Omniglot catalog, a local Ray, a trained checkpoint, a real MLflow server.

Everything is real: the catalog is built from the original release zips in ``../shared/data``,
Ray is a real local instance, MLflow servers are started on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def omniglot_catalog(tmp_path_factory) -> Path:
    """The full Omniglot catalog (Vinyals protocol) built once from the real release zips."""
    assert (OMNIGLOT_RELEASE / "images_background.zip").is_file(), f"real Omniglot release missing in {OMNIGLOT_RELEASE}"
    from fewray.platform.data.omniglot import prepare_omniglot

    out = tmp_path_factory.mktemp("catalog") / "omniglot"
    prepare_omniglot(OMNIGLOT_RELEASE, out)
    return out


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs for the in-process tests."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, logging_level="ERROR", include_dashboard=False)
    yield ray
    ray.shutdown()


def tiny_config(catalog: Path, *extra: str):
    """The benchmark config with the tiny schedule, reading ``catalog``."""
    from fewray.platform.config import load_config

    return load_config(CONFIG, [*TINY, f"data.root={catalog}", *extra])


@pytest.fixture(scope="session")
def trained(omniglot_catalog, ray_local, tmp_path_factory) -> dict:
    """A ProtoNet Conv4 meta-trained for a few steps with Ray Train (sqlite MLflow in a temp dir)."""
    from fewray.platform.train import run_metatrain

    work = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(omniglot_catalog)
    result = run_metatrain(cfg, work / "out", tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    result["work"] = work
    return result


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
