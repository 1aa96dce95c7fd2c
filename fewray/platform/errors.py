"""User-facing errors and the command-line wrapper that reports them in one line.

Every mistake a user can make (a bad config key, a missing data directory, a
checkpoint that does not exist, more ways than classes) raises a subclass of
:class:`FewrayError` whose message names the offending key, path or class.
:func:`run_cli` turns such an error into one line on stderr and exit code 2,
never a traceback.
"""

from __future__ import annotations

import sys
from typing import Callable


class FewrayError(Exception):
    """Base class of errors caused by user input (config, data, checkpoints, arguments)."""


class ConfigError(FewrayError):
    """A config file is missing, unparsable, has an unknown key or a value of the wrong type."""


class DataError(FewrayError):
    """A data directory or catalog is missing or cannot serve the requested episodes."""


class CheckpointError(FewrayError):
    """A checkpoint does not exist, is unreadable, or does not fit the model."""


def _user_error(exc: BaseException) -> FewrayError | None:
    """Return the FewrayError behind ``exc`` (also when wrapped by a Ray task error), else None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, FewrayError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a pipeline's ``main(argv)`` and exit with its status.

    A :class:`FewrayError` (raised directly or inside a Ray task) is printed as
    ``error: <message>`` on one line of stderr and exits with status 2.
    ``KeyboardInterrupt`` exits with 130. Any other exception is a bug and keeps
    its traceback.
    """
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
        err = _user_error(exc)
        if err is None:
            raise
        msg = " ".join(str(err).split())
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
