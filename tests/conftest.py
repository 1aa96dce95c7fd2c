"""Shared fixtures: the real Omniglot catalog, a local Ray, a trained checkpoint, a real MLflow server.

Everything is real: the catalog is built from the original release zips in ``../shared/data``,
Ray is a real local instance, MLflow servers are started on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from filelock import FileLock

from fewray.platform.runtime import free_port

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
    from fewray.data.omniglot import prepare_omniglot

    def build(directory: Path) -> dict:
        prepare_omniglot(OMNIGLOT_RELEASE, directory / "omniglot")
        return {"root": str(directory / "omniglot")}

    return Path(once_per_run(tmp_path_factory, "catalog", build)["root"])


def session_ray_address() -> str:
    """The address of this test process's local Ray (2 CPUs), started on first use as the pipelines do."""
    import ray

    from fewray.platform.runtime import init_ray

    init_ray("local", num_cpus=2)  # its own dashboard, never another Ray on the machine
    return ray.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs for the in-process tests (and the pipelines the tests run)."""
    import ray

    session_ray_address()
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def no_inherited_tracking_uri(monkeypatch):
    """Each test starts without ``MLFLOW_TRACKING_URI``, as a user's fresh shell, and leaves none behind.

    ``mlflow.set_tracking_uri`` (called by in-process trainings and registrations) also exports the URI to
    this process's environment; a later pipeline subprocess of the same xdist worker would inherit the URI of
    a server that test already stopped.
    """
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def split_rows(ds, workers: int, row) -> list:
    """``row(batch)`` of every row of Ray Dataset ``ds`` read through Ray Data's real ``streaming_split(workers)``,
    one thread per split, as Ray Train's workers read their shards (in the order the rows arrived)."""
    import threading

    got: list = []

    def take(it):
        for batch in it.iter_batches(batch_size=1):
            got.append(row(batch))

    threads = [threading.Thread(target=take, args=(s,)) for s in ds.streaming_split(workers, equal=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def tiny_config(catalog: Path, *extra: str):
    """The benchmark config with the tiny schedule, reading ``catalog``."""
    from fewray.platform.config import load_config

    return load_config(CONFIG, [*TINY, f"data.root={catalog}", *extra])


@pytest.fixture(scope="session")
def trained(omniglot_catalog, ray_local, tmp_path_factory) -> dict:
    """A ProtoNet Conv4 meta-trained for 30 steps by 2 Ray Train (DDP) workers, logged to a sqlite MLflow
    store in ``work`` (artifacts in ``work/mlruns``), once per run.

    The run's ``train_result.json`` fields plus ``work``, the directory holding ``out/`` and ``mlflow.db``.
    """

    def build(work: Path) -> dict:
        from fewray.platform.train import run_metatrain

        cfg = tiny_config(omniglot_catalog, "train.num_workers=2", "tracking.experiment=trained")
        result = run_metatrain(cfg, work / "out", tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
        return {**result, "work": str(work)}

    result = once_per_run(tmp_path_factory, "trained", build)
    return {**result, "work": Path(result["work"])}


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite store in ``root`` (or ``backend_store_uri``)."""

    def __init__(self, root: Path, backend_store_uri: str | None = None) -> None:
        self.root = root
        self.backend_store_uri = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        mlflow_bin = Path(PYTHON).parent / "mlflow"
        self.proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--backend-store-uri", self.backend_store_uri,
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "server.log", "ab"),
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # as cluster/local/start.sh
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
    """Run ``pipelines/<script>`` as a user would, capturing output.

    The pipeline joins this test process's Ray (``RAY_ADDRESS``, as a user joins a running cluster) instead
    of starting a Ray of its own each time; ``env={"RAY_ADDRESS": ""}`` makes it start its own local Ray.
    """
    full_env = {**os.environ, "RAY_ADDRESS": session_ray_address(), **(env or {})}
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
