"""Exception hierarchy of u2qt_core.

Every error raised on purpose by the core derives from :class:`U2QTError`, so callers (the Spark
jobs, the CLI) can catch one type and report a clean message instead of a traceback.
"""

from __future__ import annotations

__all__ = ["U2QTError", "ConfigError", "CheckpointError", "InputError", "TrainingDivergedError"]


class U2QTError(Exception):
    """Base class of all deliberate u2qt errors."""


class ConfigError(U2QTError):
    """A configuration is invalid; the message names the file and the key path."""


class CheckpointError(U2QTError):
    """A checkpoint is missing files, does not match its config, or fails its version check."""


class InputError(U2QTError):
    """Bad input data: unknown source, wrong width, non-finite values, malformed token text."""


class TrainingDivergedError(U2QTError):
    """Training produced a non-finite loss; the message names the (1-based) step."""
