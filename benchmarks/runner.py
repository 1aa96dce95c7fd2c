"""Running the user-facing pipelines from a benchmark, as a user would.

Example::

    >>> import sys, tempfile, pathlib
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "log"
    >>> pipeline("-c", "print('hello')", log=log)      # any arguments of the interpreter
    >>> log.read_text()
    'hello\\n'
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pipeline(*args: str, log: Path) -> None:
    """Run ``python ARGS`` (a pipeline and its arguments) from the repository root, its output appended to ``log``.

    Raises:
        SystemExit: the command failed, naming it and the log.
    """
    with open(log, "a") as fh:
        proc = subprocess.run([sys.executable, *args], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed (exit {proc.returncode}); see {log}")
