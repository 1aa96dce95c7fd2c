"""Ray start-up and cluster resources: local Ray on a laptop, the running cluster under ``ray job submit``."""

from __future__ import annotations

import os
import signal
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
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs = {"num_cpus": num_cpus} if num_cpus and address == "local" else {}
    before = signal.getsignal(signal.SIGTERM)
    ray.init(address=address, log_to_driver=True, configure_logging=True, logging_level="WARNING", **kwargs)
    # ray.init replaces the driver's SIGTERM handler with a plain exit; keep a handler the caller installed
    # (the pipelines' run_cli turns SIGTERM into a clean stop, exit 143, that a re-run resumes from)
    if callable(before) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, before)


def cluster_slots() -> tuple[int, int]:
    """``(gpus, cpus)`` in the whole cluster (integers)."""
    res = ray.cluster_resources()
    return int(res.get("GPU", 0)), int(res.get("CPU", 0))


def largest_node_cpus() -> int:
    """CPUs of the biggest alive node: the most one task can use on a single machine."""
    return max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1)
