"""Ray start-up and cluster resources: local Ray on a laptop, the running cluster under ``ray job submit``.

What a pipeline prints: its progress and results, fewray's own warnings (also those of code running in Ray
workers) and errors. Ray's own output (its workers' logs, Ray Train's and Ray Data's messages, the core
worker's ``.cc`` lines) stays in Ray's log files (``/tmp/ray/session_latest/logs`` on each node) unless
``FEWRAY_VERBOSE=1`` asks for it in the terminal too.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import warnings

import ray

#: environment variable: ``1`` (or ``true``, ``yes``, ``on``) shows Ray's own output in the terminal
VERBOSE_ENV = "FEWRAY_VERBOSE"
#: how a Ray worker marks the lines of fewray's loggers in its output, so the driver shows those (unmarked)
WORKER_LINE_MARK = "[fewray] "
#: Ray runs this in every worker process of a job that :func:`init_ray` started or joined
WORKER_SETUP_HOOK = "fewray.platform.runtime.setup_worker_logging"

log = logging.getLogger(__name__)


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

    Output: the terminal shows the lines of fewray's loggers, also those logged in Ray workers (each worker
    runs :func:`setup_worker_logging`, Ray's ``worker_process_setup_hook``), and Ray's autoscaler events
    (a resource request that cannot be scheduled); the rest of the workers' output stays in Ray's log files.
    With ``FEWRAY_VERBOSE=1`` everything reaches the terminal, as Ray prints it. Errors raised in Ray tasks
    reach the driver as exceptions either way. One line says where Ray runs and where its logs are.

    Args:
        address: a Ray address (``auto``, ``host:port``, ``ray://...``) or None for ``RAY_ADDRESS``/local.
        num_cpus: CPUs of a new local Ray (ignored when connecting to a cluster); None for all.
    """
    setup_logging()
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
    show_all = verbose()
    show_worker_line = None if show_all else _worker_line_filter()
    before = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, log_to_driver=show_all or show_worker_line is not None, configure_logging=True,
                 logging_level="INFO" if show_all else "WARNING",
                 runtime_env={"worker_process_setup_hook": WORKER_SETUP_HOOK}, **kwargs)
    finally:
        if api_server is None:
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        else:
            os.environ["RAY_API_SERVER_ADDRESS"] = api_server
    if show_worker_line is not None:
        show_worker_line()
    # ray.init replaces the driver's SIGTERM handler with a plain exit; keep a handler the caller installed
    # (the pipelines' run_cli turns SIGTERM into a clean stop, exit 143, that a re-run resumes from)
    if callable(before) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, before)
    _log_where_ray_runs(address)


def verbose() -> bool:
    """Whether ``FEWRAY_VERBOSE`` asks for Ray's own output in the terminal (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _LineFormatter(logging.Formatter):
    """``warning: message`` (``error:``, ``debug:``; an info record is the bare message), each line of the
    record (a traceback too) prefixed by ``mark``."""

    def __init__(self, mark: str = "") -> None:
        super().__init__("%(message)s")
        self.mark = mark

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno != logging.INFO:
            text = f"{record.levelname.lower()}: {text}"
        return "\n".join(self.mark + line for line in text.splitlines() or [""])


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each record (pytest, Ray's workers replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(mark: str = "") -> None:
    """Print the records of fewray's loggers (``fewray.*``) on stderr: info and above, debug too with
    ``FEWRAY_VERBOSE=1``. Called by :func:`init_ray`; safe to call again."""
    logger = logging.getLogger("fewray")
    logger.setLevel(logging.DEBUG if verbose() else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_LineFormatter(mark))
        logger.addHandler(handler)


def setup_worker_logging() -> None:
    """Ray's ``worker_process_setup_hook`` (see :func:`init_ray`): in a Ray worker, fewray's log lines carry
    :data:`WORKER_LINE_MARK`, by which the driver tells them from Ray's own output. They do not propagate to
    the root logger, which Ray Train's workers give a console handler of their own (each line twice)."""
    setup_logging(WORKER_LINE_MARK)
    logging.getLogger("fewray").propagate = False
    # a Python warning issued from fewray's code (e.g. an unwritable decoded-image cache) is fewray's too
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(filename).startswith(package):
            logging.getLogger("fewray").warning("%s", message)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def _worker_line_filter():
    """A function that makes the driver print, of its workers' output, only the lines of fewray's loggers
    (their mark removed, without Ray's ``(pid=...)`` prefix) and Ray's autoscaler events; None if this Ray
    has not the (private) hooks it needs, and then no worker output reaches the terminal.

    It replaces the handler that ``ray.init(log_to_driver=True)`` gives Ray's stream of worker output
    (``ray._private``: Ray 2.60's ``global_worker_stdstream_dispatcher`` and ``print_to_stdstream``)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        from ray._private.worker import print_to_stdstream
    except ImportError:
        return None
    if not (hasattr(dispatcher, "add_handler") and hasattr(dispatcher, "remove_handler")):
        return None

    def show(data: dict) -> None:
        if data.get("pid") == "autoscaler":  # e.g. a resource request no node can fit: the run would wait
            print_to_stdstream(data, ignore_prefix=False)
            return
        n = len(WORKER_LINE_MARK)
        lines = [line[n:] for line in data.get("lines", []) if line.startswith(WORKER_LINE_MARK)]
        if lines:  # as they are: Ray's de-duplication would hold back lines that differ only in numbers
            sink = sys.stderr if data.get("is_err") else sys.stdout
            print("\n".join(lines), file=sink, flush=True)

    def install() -> None:
        dispatcher.remove_handler("ray_print_logs")  # the name ray.shutdown removes
        dispatcher.add_handler("ray_print_logs", show)

    return install


def _log_where_ray_runs(address: str) -> None:
    """One info line: the Ray this process uses, its CPUs and GPUs, and where Ray's own logs are."""
    gpus, cpus = cluster_slots()
    where = "a new local Ray" if address == "local" else f"the Ray cluster at {address}"
    try:
        logs = ray._private.worker._global_node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - private API; the line is only a hint
        logs = "/tmp/ray/session_latest/logs"
    slots = f"{cpus} CPU{'s' if cpus != 1 else ''}" + (f", {gpus} GPU{'s' if gpus != 1 else ''}" if gpus else "")
    log.info("Ray: %s (%s); Ray's own logs: %s%s", where, slots, logs,
             "" if verbose() else f" ({VERBOSE_ENV}=1 shows them here)")


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


def default_workers() -> int:
    """Ray tasks of an evaluation fan-out by default: one per GPU of the cluster, else one per CPU slot."""
    gpus, cpus = cluster_slots()
    return max(1, gpus or cpus)


def task_options(num_workers: int, cpus_each: bool = True) -> tuple[dict, int]:
    """``(Ray task options, torch threads)`` for ``num_workers`` tasks of a fan-out: one GPU each when the cluster
    has GPUs, else an even share of the CPUs (at most one node's; 1 CPU without ``cpus_each``)."""
    gpus, cpus = cluster_slots()
    if gpus:
        return {"num_gpus": 1}, 1
    threads = max(1, min(largest_node_cpus(), cpus // max(1, num_workers))) if cpus_each else 1
    return {"num_cpus": threads}, threads


def discard(refs, timeout: float = 10.0) -> None:
    """Collect the results of Ray tasks we no longer wait for, so Ray does not log their errors as unhandled.

    They fail fast when they depend on the same failed input; whatever is still running after ``timeout``
    seconds in all is left to Ray's shutdown. (``ray.cancel`` on them crashed Ray's core worker.)
    """
    refs = list(refs)
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout)
    for ref in refs:
        try:
            ray.get(ref, timeout=0)
        except Exception:  # noqa: BLE001 - failed the same way as the error being raised, or still running
            pass


def get_all(refs) -> list:
    """``ray.get(refs)``; when one of them fails (or Ctrl-C), the others are collected (:func:`discard`) before the
    error is raised, so Ray does not log their failures as unhandled."""
    refs = list(refs)
    try:
        return ray.get(refs)
    except BaseException:
        discard(refs)
        raise
