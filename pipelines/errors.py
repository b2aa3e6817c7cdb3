"""Every error type the pipeline raises on purpose, in one place, and the exit code each maps to.

The core's own types (:mod:`u2qt_core.errors`: ``ConfigError``, ``InputError``, ``CheckpointError``,
``ContractMismatch``...) derive from the same :class:`U2QTError`; the pipeline's are below, grouped
by the part of the system that raises them. Callers catch by type; where Spark or Delta raise, the
error's condition (``AnalysisException.getCondition()``) is read, not its message text.

Exit codes, shared by ``u2qt``, ``u2qt-submit`` and the DAG tasks (:func:`exit_code`):

====  ===========================================================================================
0     success
1     ``u2qt check-inputs`` found a difference it fails on
2     a deliberate error (:class:`U2QTError`: config, date, input, version...) or a usage error
3     a gate failed: the night's quality gates or a version's promotion gates
====  ===========================================================================================
"""
from __future__ import annotations

import re

from u2qt_core.errors import U2QTError

_CONDITION_TAG = re.compile(r"^\[([A-Z][A-Z0-9_]*)\]")

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2
EXIT_GATE_FAILED = 3


# ---- the night -----------------------------------------------------------------------------------

class QualityGateFailed(U2QTError):
    """The staged day failed a quality gate; nothing of it was published."""


class StagingCleared(U2QTError):
    """A date has no staged rows and nothing shows it published by this run: publishing it would
    replace it with nothing."""


class NumericPathRefused(U2QTError):
    """The night's encoder would run on another numeric path (device, precision, runtime) than the
    one its tokenizer version was trained on, and ``u2qt evaluate`` did not validate that path
    (or measured its agreement below ``gates.min_path_agreement``): its codes could differ."""


class InferenceRowError(U2QTError):
    """Inference failed on one row; the message names its user, source and date."""


# ---- the lake ------------------------------------------------------------------------------------

class TokenizerVersionMismatch(U2QTError):
    """A table generation holds codes of another tokenizer version (invariant 2)."""


class LockTimeout(U2QTError):
    """Another run held the publish lock for longer than ``concurrency.lock_timeout_s``."""


class TableCreateRace(U2QTError):
    """Creating a table failed because another run is creating it at the same moment (Delta said
    ``DELTA_TABLE_NOT_FOUND`` while it created the table: the winner's ``_delta_log`` folder exists
    but holds no commit yet). Raised only by the create path, so a read of a missing table is
    never retried; :func:`retry_on_conflict` retries it like a conflict."""


# ---- the tokenizer life cycle --------------------------------------------------------------------

class RegistryError(U2QTError):
    """A version is not registered, no version is promoted, or the store cannot be used."""


class PromotionRefused(U2QTError):
    """``u2qt promote`` of a version that was not evaluated or failed a gate."""


class IncompleteGeneration(U2QTError):
    """The new generation lacks dates or holds codes of another version: it is not switched to."""


# ---- deployment ----------------------------------------------------------------------------------

class DagRunFailed(U2QTError):
    """A DAG run ended in a state other than success."""


def error_condition(exc: BaseException) -> str | None:
    """Spark's error condition of ``exc`` or of the error it was raised from (e.g.
    ``DELTA_TABLE_NOT_FOUND``); ``None`` when no error in the chain carries one."""
    seen: BaseException | None = exc
    while seen is not None:
        condition = getattr(seen, "getCondition", None)
        if callable(condition) and condition():
            return str(condition())
        seen = seen.__cause__ or seen.__context__
    tagged = _CONDITION_TAG.match(str(exc))     # an untyped error (e.g. through py4j): Spark's "[CONDITION] ..."
    return tagged.group(1) if tagged else None


def exit_code(exc: BaseException) -> int | None:
    """The exit code of a deliberate error (see the table above); ``None`` for a bug, which keeps
    its traceback."""
    if isinstance(exc, QualityGateFailed):
        return EXIT_GATE_FAILED
    if isinstance(exc, U2QTError):
        return EXIT_ERROR
    return None
