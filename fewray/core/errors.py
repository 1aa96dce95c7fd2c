"""User-facing errors: every mistake a user can make raises a subclass of :class:`FewrayError`.

Its message is one line naming the offending key, path or class (a bad config key, a missing data
directory, a checkpoint that does not exist, more ways than classes). The pipelines print it as
``error: <message>`` and exit 2 (:func:`fewray.platform.errors.run_cli`); notebook users get the exception.

This module imports nothing but the standard library: every part of fewray may raise these.
"""

from __future__ import annotations


class FewrayError(Exception):
    """Base class of errors caused by user input (config, data, checkpoints, arguments)."""


class ConfigError(FewrayError):
    """A config file is missing, unparsable, has an unknown key or a value of the wrong type."""


class DataError(FewrayError):
    """A data directory or catalog is missing or cannot serve the requested episodes."""


class CheckpointError(FewrayError):
    """A checkpoint does not exist, is unreadable, or does not fit the model."""


class Interrupted(KeyboardInterrupt):
    """Work stopped before its end because the user interrupted it (Ctrl-C, SIGTERM); a re-run resumes."""
