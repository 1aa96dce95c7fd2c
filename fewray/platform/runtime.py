"""Ray start-up and cluster resources: local Ray on a laptop, the running cluster under ``ray job submit``."""

from __future__ import annotations

import os
import signal
import socket
import threading

import ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to Ray once: ``address`` or ``RAY_ADDRESS`` if set (a cluster, ``auto``, or the
    address ``ray job submit`` gives a job's driver), otherwise start a new local Ray.

    Without an address this never attaches to whatever ``ray start`` left on the machine: a
    stale head recorded in ``/tmp/ray`` would make ``ray.init()`` wait forever. Use
    ``RAY_ADDRESS=auto`` to join a head started by hand.

    A SIGTERM handler installed before (by :func:`fewray.platform.errors.run_cli`) is kept.

    ``RAY_AUTH_MODE`` defaults to ``disabled`` so that a local head started later with
    ``ray start`` and ``ray job submit`` agree (see ../shared/STACK.md).

    A new local Ray gets its dashboard on a free port of 127.0.0.1, and ``RAY_API_SERVER_ADDRESS`` points
    there in the environment of every Ray process it starts (set while ``ray.init`` spawns them, then
    restored in the driver, so that a ``ray job submit`` this process runs still goes where it is told).
    Ray Train's ``PlacementGroupCleaner`` asks the state API whether the training controller is alive
    without an address; left to auto-detection it asks the newest *other* Ray on the machine
    (``/tmp/ray/ray_current_cluster``, written by ``ray start`` or ``cluster/local/start.sh``), which does
    not know our controller: the cleaner then dies with a traceback in the log or, if it already holds the
    run's placement group, removes it.

    Args:
        address: a Ray address (``auto``, ``host:port``, ``ray://...``) or None for ``RAY_ADDRESS``/local.
        num_cpus: CPUs of a new local Ray (ignored when connecting to a cluster); None for all.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict = {"num_cpus": num_cpus} if num_cpus and address == "local" else {}
    api_server = os.environ.get("RAY_API_SERVER_ADDRESS")
    if address == "local":
        port = free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # inherited by the Ray processes
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port)
    before = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, log_to_driver=True, configure_logging=True, logging_level="WARNING", **kwargs)
    finally:
        if api_server is None:
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        else:
            os.environ["RAY_API_SERVER_ADDRESS"] = api_server
    # ray.init replaces the driver's SIGTERM handler with a plain exit; keep a handler the caller installed
    # (the pipelines' run_cli turns SIGTERM into a clean stop, exit 143, that a re-run resumes from)
    if callable(before) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, before)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server about to bind it; another process may take it first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_slots() -> tuple[int, int]:
    """``(gpus, cpus)`` in the whole cluster (integers)."""
    res = ray.cluster_resources()
    return int(res.get("GPU", 0)), int(res.get("CPU", 0))


def largest_node_cpus() -> int:
    """CPUs of the biggest alive node: the most one task can use on a single machine."""
    return max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1)
