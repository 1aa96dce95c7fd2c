"""Argument types and output-path checks shared by the pipelines (``pipelines/*.py``).

Everything here fails before any work starts, with a one-line :class:`~fewray.platform.errors.FewrayError`
(or an ``argparse`` usage error) naming the flag and the value: a meta-test must not run for minutes and then
find that ``--output`` cannot be written.

Example::

    >>> positive_int("4")
    4
    >>> int_list("1,5,10")
    [1, 5, 10]
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> check_output_file(d / "new" / "result.json", "--output") == d / "new" / "result.json"
    True
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fewray.platform.errors import FewrayError


class OutputPathError(FewrayError):
    """An output path that cannot be written (a directory where a file is asked, a file in the way, no permission)."""


def positive_int(text: str) -> int:
    """``argparse`` type: an integer >= 1 (``--num-workers``), else a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def int_list(text: str) -> list[int]:
    """``argparse`` type: ``"5"`` -> ``[5]``; ``"1,5,10"`` -> ``[1, 5, 10]``; an empty item (``1,,5``) is an error."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if not parts or any(p == "" for p in parts):
            raise ValueError
        return [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or integers like 1,5,10, got '{text}'") from None


def _first_existing(path: Path) -> Path:
    """The deepest existing ancestor of ``path`` (``path`` itself if it exists)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_parent(path: Path, flag: str) -> None:
    anchor = _first_existing(path.parent)
    if not anchor.is_dir():
        raise OutputPathError(f"{flag} {path}: {anchor} is a file, not a directory")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: no permission to write in {anchor}")


def check_output_file(path: str | Path, flag: str = "--output") -> Path:
    """Check that a result file can be written at ``path`` (creating its missing parent directories).

    An existing file is fine (it is replaced when the work succeeds); nothing is created here.

    Args:
        path: the file to be written; flag: the command-line flag, for the message.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputPathError: ``path`` is a directory, a parent is a file, or a directory is not writable.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a directory; give a file name like {path / 'result.json'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{flag} {path}: the file is not writable")
    _check_writable_parent(path, flag)
    return path


def check_output_dir(path: str | Path, flag: str = "--output-dir") -> Path:
    """Check that ``path`` is, or can be created as, a writable directory.

    Raises:
        OutputPathError: ``path`` is a file, a parent is a file, or a directory is not writable.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {path} is a file, not a directory")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"{flag} {path}: no permission to write in it")
        return path
    _check_writable_parent(path, flag)
    return path


def finish(result: dict, output: str | None) -> None:
    """A pipeline's last words after its result lines: the run's MLflow UI link on stderr, then ``--output``.

    The result is printed before this is called, so a file that cannot be written never hides it.

    Args:
        result: the result JSON (with ``tracking_uri``, ``mlflow_experiment_id``, ``mlflow_run_id``);
        output: ``--output``, or None.

    Raises:
        OutputPathError: the file cannot be written after all (the message names the run that holds the result).
    """
    import json
    import sys

    from fewray.platform.tracking import run_ui_line

    print(run_ui_line(result["tracking_uri"], result["mlflow_experiment_id"], result["mlflow_run_id"]), file=sys.stderr)
    if output:
        try:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_text(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise OutputPathError(f"--output {output}: cannot write the result ({exc.strerror or exc}); "
                                  f"it is in MLflow run {result.get('mlflow_run_id')}") from None
