"""The command-line wrapper that reports user errors in one line, and the error classes it knows.

Every mistake a user can make raises a subclass of :class:`FewrayError` (defined in :mod:`fewray.core.errors`,
re-exported here for the runtime) whose message names the offending key, path or class.
:func:`run_cli` turns such an error into one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

from fewray.core.errors import CheckpointError, ConfigError, DataError, FewrayError, Interrupted

__all__ = ["CheckpointError", "ConfigError", "DataError", "FewrayError", "Interrupted", "run_cli"]

_terminated = False
_TERMINATED = "error: terminated by SIGTERM (re-run the same command to resume)"


def _sigterm_to_sigint(signum, frame) -> None:
    """SIGTERM handler: remember it, and stop the main thread the way Ctrl-C does.

    Ray's blocking calls (``ray.get`` inside ``trainer.fit``) stop cleanly for SIGINT's
    KeyboardInterrupt; an exception raised straight from a SIGTERM handler there can abort the process.
    """
    global _terminated
    _terminated = True
    # Python's own SIGINT handler, not one a library installed meanwhile (Ray Train's "graceful abort"
    # handler returns from trainer.fit as if training had finished, or exits with status 1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.kill(os.getpid(), signal.SIGINT)


def _user_error(exc: BaseException) -> FewrayError | None:
    """Return the innermost FewrayError behind ``exc`` (also when wrapped by Ray task errors), else None.

    Ray re-raises a task's exception as a class deriving from both ``RayTaskError`` and the original
    type, whose message carries the remote traceback; the original is at the end of the ``cause`` chain.
    """
    found, seen = None, 0
    while exc is not None and seen < 16:
        if isinstance(exc, FewrayError):
            found = exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return found


def _exit_with(line: str, code: int) -> None:
    """Print the pipeline's last line on stderr and exit with ``code``, Ray disconnected first.

    Ray streams the workers' lines to the driver in a thread of its own; until ``ray.shutdown`` (else run at
    exit) stops it, a progress line a worker logged just before Ctrl-C can be printed after ``line``.
    ``ray.shutdown`` joins that thread, and stops the workers of a local Ray as the exit would.
    """
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    print(line, file=sys.stderr)
    sys.exit(code)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a pipeline's ``main(argv)`` and exit with its status.

    A :class:`FewrayError` (raised directly or inside a Ray task) is printed as
    ``error: <message>`` on one line of stderr and exits with status 2.
    ``KeyboardInterrupt`` exits with 130 and SIGTERM with 143, after the ``finally`` blocks and
    context managers ran (the MLflow run is closed; a re-run resumes). Before that last line Ray is shut
    down, so that no worker line streamed late follows it.
    Any other exception is a bug and keeps its traceback.
    """
    signal.signal(signal.SIGTERM, _sigterm_to_sigint)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job may inherit SIGINT ignored
    try:
        code = main(argv)
    except KeyboardInterrupt as exc:
        if _terminated:
            _exit_with(_TERMINATED, 143)
        _exit_with(f"error: interrupted{f' ({exc})' if str(exc) else ''} (re-run the same command to resume)", 130)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
        if _terminated:  # whatever a library raised while stopping for SIGTERM (e.g. Ray Train's abort)
            _exit_with(_TERMINATED, 143)
        err = _user_error(exc)
        if err is None:
            raise
        _exit_with(f"error: {' '.join(str(err).split())}", 2)
    sys.exit(code or 0)
