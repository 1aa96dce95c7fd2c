"""MLflow tracking: where runs go, and a buffered metric logger for training workers.

Default store: ``sqlite:///<cwd>/mlflow.db`` (embedded, no server). ``--tracking-uri`` or
``MLFLOW_TRACKING_URI`` point at a server (needed when workers run on other nodes).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from fewray.platform.errors import FewrayError
from fewray.platform.runtime import verbose

log = logging.getLogger(__name__)

#: MLflow's loggers whose INFO records describe its own store (a new sqlite file's tables and migrations), not the
#: run: shown only with ``FEWRAY_VERBOSE=1``
STORE_LOGGERS = ("mlflow.store.db.utils", "alembic")


class TrackingError(FewrayError):
    """The MLflow tracking URI cannot be reached."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else an absolute ``sqlite:///.../mlflow.db`` in the cwd."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    return uri


def server_problem(uri: str, timeout: float) -> str | None:
    """Why the ``http(s)://`` tracking server at ``uri`` does not answer ``/health`` within ``timeout`` seconds
    (refused, timeout, DNS, HTTP error), or None when it answers or ``uri`` is not a server (sqlite, file)."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
        return None
    except Exception as exc:  # noqa: BLE001 - every failure means "not now"
        return str(exc)


def setup_tracking(uri: str | None, experiment: str) -> str:
    """Point MLflow at ``uri`` (see :func:`resolve_tracking_uri`), check a server answers, select ``experiment``.

    MLflow's INFO lines about its own store (``Creating initial MLflow database tables...`` for a new sqlite
    file) stay out of the terminal unless ``FEWRAY_VERBOSE=1``; its warnings and errors are shown.

    A new experiment in a ``sqlite:///PATH`` store gets its artifacts in ``mlruns/`` next to ``PATH`` (what
    ``make mlflow-ui`` serves), whichever directory the run starts from.

    Returns:
        The resolved tracking URI (pass it to workers).

    Raises:
        TrackingError: an ``http(s)://`` tracking server that does not answer ``/health`` within 10 s, or a
            URI MLflow cannot open (unknown scheme, a database file that cannot be created).
    """
    uri = resolve_tracking_uri(uri)
    for name in STORE_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose() else logging.WARNING)
    problem = server_problem(uri, timeout=10)
    if problem:
        raise TrackingError(f"MLflow tracking server {uri} is unreachable ({problem})")
    try:
        mlflow.set_tracking_uri(uri)
        _select_experiment(uri, experiment)
    except Exception as exc:  # noqa: BLE001 - an unknown scheme, a database that cannot be opened, ...
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TrackingError(f"MLflow tracking URI {uri!r} cannot be used ({first}); give a sqlite:///PATH.db, "
                            f"an http(s):// server or a directory") from None
    return uri


def _select_experiment(uri: str, experiment: str) -> None:
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(experiment) is None:
        # a new experiment in a sqlite store keeps its artifacts next to the database, not in ./mlruns of
        # whatever directory this process happens to run in
        artifacts = Path(uri[len("sqlite:///"):]).parent / "mlruns"
        try:
            mlflow.create_experiment(experiment, artifact_location=artifacts.resolve().as_uri())
        except mlflow.exceptions.MlflowException:
            pass  # created meanwhile by another process: set_experiment selects it
    mlflow.set_experiment(experiment)


class MetricLogger:
    """Metric logging to one MLflow run from a training worker that a tracking outage never stalls.

    :meth:`log` only appends to a buffer; a background thread sends the buffer with ``log_batch``
    every ``interval`` seconds (or at once after :meth:`flush`). Before sending to an ``http(s)://``
    server it probes ``/health`` (2 s timeout), so a stopped server costs the thread two seconds, not
    MLflow's minutes of retries. While the server is unreachable the metrics stay buffered and one
    warning is logged (``MLflow tracking server ... unreachable``); when it answers again the whole
    backlog is sent, so nothing of that window is lost. :meth:`close` sends what is left, waiting up to
    ``timeout`` seconds, and writes anything still unsent to ``spool_path`` (JSON lines) for
    :func:`replay_spool`.

    Args:
        tracking_uri (str): MLflow tracking URI; run_id (str): the run to log to.
        interval (float): seconds between background sends. Default 2.0.
        spool_path (str | Path | None): where :meth:`close` writes unsent metrics. Default None (they are
            reported in the warning and dropped).
    """

    def __init__(self, tracking_uri: str, run_id: str, interval: float = 2.0, spool_path: str | Path | None = None) -> None:
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        self.uri = tracking_uri
        self.interval = interval
        self.spool_path = Path(spool_path) if spool_path else None
        self._buffer: list[Metric] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._outage = False
        self._thread = threading.Thread(target=self._run, name="fewray-metric-logger", daemon=True)
        self._thread.start()

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Buffer ``metrics`` at ``step`` (timestamps taken now); never blocks on the network."""
        ts = int(time.time() * 1000)
        with self._lock:
            self._buffer.extend(Metric(k, float(v), ts, int(step)) for k, v in metrics.items())

    def flush(self) -> None:
        """Ask the background thread to send now (returns at once)."""
        self._wake.set()

    @property
    def pending(self) -> int:
        """Number of metrics not yet sent."""
        with self._lock:
            return len(self._buffer)

    def _send(self) -> bool:
        """Send the buffer; True when it is empty afterwards."""
        with self._lock:
            todo = list(self._buffer)
        if not todo:
            return True
        if server_problem(self.uri, timeout=2):
            self._warn_outage(f"unreachable, {len(todo)} metrics kept for retry")
            return False
        sent = 0
        try:
            for s in range(0, len(todo), 1000):
                self.client.log_batch(self.run_id, metrics=todo[s : s + 1000], synchronous=True)
                sent += len(todo[s : s + 1000])
        except Exception as exc:  # noqa: BLE001 - a tracking failure must not stop training
            self._warn_outage(f"failed ({' '.join(str(exc).split())[:200]}), metrics kept for retry")
            return False
        finally:
            with self._lock:
                del self._buffer[:sent]
        if self._outage:
            log.warning("MLflow tracking server %s is back; sent %d buffered metrics", self.uri, sent)
            self._outage = False
        return self.pending == 0

    def _warn_outage(self, what: str) -> None:
        if not self._outage:
            log.warning("MLflow tracking server %s %s", self.uri, what)
        self._outage = True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self._stop.is_set():
                self._send()

    def close(self, timeout: float = 120.0) -> bool:
        """Stop the thread and send what is left, retrying for up to ``timeout`` seconds.

        Returns:
            True when every metric reached the server; otherwise the rest is written to ``spool_path``
            (if set) and a warning names the file.
        """
        self._stop.set()
        self._wake.set()
        self._thread.join()
        deadline = time.monotonic() + timeout
        while not self._send() and time.monotonic() < deadline:
            time.sleep(min(self.interval, max(0.0, deadline - time.monotonic())))
        with self._lock:
            left = list(self._buffer)
        if not left:
            return True
        if self.spool_path is not None:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            with self.spool_path.open("a") as f:
                for m in left:
                    f.write(json.dumps({"run_id": self.run_id, "key": m.key, "value": m.value,
                                        "timestamp": m.timestamp, "step": m.step}) + "\n")
            log.warning("MLflow unreachable at the end of training: %d metrics spooled to %s", len(left), self.spool_path)
        else:
            log.warning("MLflow unreachable at the end of training: %d metrics not logged", len(left))
        return False


def replay_spool(tracking_uri: str, spool_path: str | Path) -> int:
    """Send the metrics a :class:`MetricLogger` spooled to ``spool_path`` and delete the file.

    Returns:
        The number of metrics sent (0 when there is no spool file).

    Raises:
        MlflowException: when the tracking server still cannot take them (the file is kept).
    """
    path = Path(spool_path)
    if not path.is_file():
        return 0
    client = MlflowClient(tracking_uri)
    by_run: dict[str, list[Metric]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            by_run[d["run_id"]].append(Metric(d["key"], d["value"], d["timestamp"], d["step"]))
    for run_id, metrics in by_run.items():
        for s in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[s : s + 1000], synchronous=True)
    path.unlink()
    return sum(map(len, by_run.values()))


def run_exists(uri: str, run_id: str) -> bool:
    """Whether the tracking store at ``uri`` holds the run ``run_id`` (a copied output directory may name a run
    of another store)."""
    try:
        MlflowClient(uri).get_run(run_id)
        return True
    except mlflow.exceptions.MlflowException:
        return False


#: where ``make mlflow-ui`` (and ``mlflow ui``) serves the UI by default
DEFAULT_UI = "http://127.0.0.1:5000"


def run_ui_line(uri: str, experiment_id: str, run_id: str) -> str:
    """One line telling where a run's curves are in the MLflow UI (its Model training view).

    A tracking server (``http(s)://``) serves the UI itself; for a local store the line says how to start one.

    Example::

        >>> run_ui_line("http://127.0.0.1:5005", "1", "abc")
        'MLflow run abc: http://127.0.0.1:5005/#/experiments/1/runs/abc/model-metrics?workflowType=machine_learning'
        >>> run_ui_line("sqlite:////tmp/x/mlflow.db", "1", "abc").endswith(
        ...     "(start the UI: mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db)")
        True
    """
    server = uri.startswith(("http://", "https://"))
    base = uri.rstrip("/") if server else DEFAULT_UI
    link = f"{base}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics?workflowType=machine_learning"
    return f"MLflow run {run_id}: {link}" + ("" if server else f" (start the UI: mlflow ui --backend-store-uri {uri})")


def metric_history(client: MlflowClient, run_id: str, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` sorted by step, for the keys the run has."""
    out: dict[str, list[tuple[int, float]]] = {}
    for key in keys:
        hist = client.get_metric_history(run_id, key)
        if hist:
            out[key] = sorted((m.step, m.value) for m in hist)
    return out


def log_dict_params(params: dict[str, Any]) -> None:
    """Log flattened params to the active run (values as strings, long ones cut to MLflow's limit)."""
    mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})


# --- Sweeps: nested runs driven through MlflowClient (usable from Ray actors and the driver alike) ---

PARENT_TAG = "mlflow.parentRunId"


def start_child_run(tracking_uri: str, parent_run_id: str, run_name: str, tags: dict[str, str] | None = None) -> str:
    """Create a run nested under ``parent_run_id`` (same experiment) and return its id; it stays RUNNING.

    MLflow's UI shows runs tagged ``mlflow.parentRunId`` as children of that run.

    Raises:
        TrackingError: when the parent run does not exist or the store does not answer.
    """
    client = MlflowClient(tracking_uri)
    try:
        parent = client.get_run(parent_run_id)
        run = client.create_run(parent.info.experiment_id, run_name=run_name,
                                tags={PARENT_TAG: parent_run_id, **(tags or {})})
    except Exception as exc:  # noqa: BLE001 - MlflowException, connection errors
        raise TrackingError(f"cannot create a child run of {parent_run_id} at {tracking_uri}: {exc}") from None
    return run.info.run_id


def log_params_to(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Log ``params`` (values as strings, cut to MLflow's limit) to ``run_id``, 100 per request."""
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100], synchronous=True)


def child_runs(client: MlflowClient, parent_run_id: str) -> list:
    """Runs nested under ``parent_run_id`` (``mlflow.entities.Run``), oldest first."""
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              max_results=10000, order_by=["attributes.start_time ASC"])
    return list(runs)
