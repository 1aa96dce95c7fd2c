"""MLflow tracking: where runs go, and a buffered metric logger for training workers.

Default store: ``sqlite:///<cwd>/mlflow.db`` (embedded, no server). ``--tracking-uri`` or
``MLFLOW_TRACKING_URI`` point at a server (needed when workers run on other nodes).
"""

from __future__ import annotations

import logging
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from fewray.platform.errors import FewrayError

log = logging.getLogger(__name__)


class TrackingError(FewrayError):
    """The MLflow tracking URI cannot be reached."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else an absolute ``sqlite:///.../mlflow.db`` in the cwd."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    return uri


def setup_tracking(uri: str | None, experiment: str) -> str:
    """Point MLflow at ``uri`` (see :func:`resolve_tracking_uri`), check a server answers, select ``experiment``.

    Returns:
        The resolved tracking URI (pass it to workers).

    Raises:
        TrackingError: an ``http(s)://`` tracking server that does not answer ``/health`` within 10 s.
    """
    uri = resolve_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).read()
        except Exception as exc:  # URLError, timeout, connection refused
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({exc})") from None
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    return uri


class MetricLogger:
    """Buffered metric logging to one MLflow run from any process (e.g. a Ray Train worker).

    Metrics are buffered and sent with ``log_batch`` on :meth:`flush`; if the server is
    unreachable the batch stays buffered (a warning is logged) and is retried on the next flush,
    so a short tracking outage loses nothing.

    Args:
        tracking_uri (str): MLflow tracking URI; run_id (str): the run to log to.
    """

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        self._buffer: list[Metric] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Buffer ``metrics`` at ``step`` (timestamps taken now)."""
        ts = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), ts, int(step)) for k, v in metrics.items())

    def flush(self) -> bool:
        """Send the buffer; returns False (and keeps it) when the tracking server fails."""
        while self._buffer:
            batch = self._buffer[:1000]
            try:
                self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
            except Exception as exc:  # noqa: BLE001 - any tracking failure must not stop training
                log.warning("MLflow logging failed, %d metrics kept for retry: %s", len(self._buffer), exc)
                return False
            del self._buffer[: len(batch)]
        return True


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
