"""Running dates side by side: a lock that serialises the writes of publish (and erasure), and a
retry with backoff for Delta's optimistic-concurrency conflicts.

Staging may run for several dates at once (each replaces only its own date partition). The
publishing writes of two dates touch the same ``user_token_history`` / ``user_tokens`` rows and
compute collision suffixes from what they read, so they run one at a time:

* in Airflow the ``publish`` task runs in the pool ``u2qt_publish`` (one slot) - across workers;
* on one machine :func:`publish_lock` (an ``flock`` on ``<tables_root>/_u2qt_locks/publish.lock``)
  serialises threads and processes that share ``tables_root``, e.g. ``u2qt run-day`` beside a DAG.

Any Delta write that still meets a concurrent commit (two runs creating the same table, an
append racing a MERGE) is retried by :func:`retry_on_conflict` with exponential backoff: every
write here is idempotent (``replaceWhere``, MERGE of computed state), so running it again is safe.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from pipelines.errors import LockTimeout, TableCreateRace, error_condition

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_DIR = "_u2qt_locks"
PUBLISH_POOL = "u2qt_publish"


def _conflict_types() -> tuple[type[BaseException], ...]:
    from delta.exceptions import (ConcurrentAppendException, ConcurrentDeleteDeleteException,
                                  ConcurrentDeleteReadException, ConcurrentTransactionException,
                                  ConcurrentWriteException, DeltaConcurrentModificationException,
                                  MetadataChangedException, ProtocolChangedException)

    return (ConcurrentAppendException, ConcurrentDeleteDeleteException, ConcurrentDeleteReadException,
            ConcurrentTransactionException, ConcurrentWriteException, DeltaConcurrentModificationException,
            MetadataChangedException, ProtocolChangedException)


# a table created by another run between our existence check and our CREATE
# A run that loses the race to create a table sees one of these. NON_EMPTY_LOCATION is what the loser
# gets while the winner's _delta_log folder exists but its first commit has not landed yet; a
# location that really holds other files still fails, after the retries (about 30 s).
_CREATE_RACE_CONDITIONS = (
    "DELTA_TABLE_ALREADY_EXISTS",
    "DELTA_PROTOCOL_CHANGED",
    "DELTA_METADATA_CHANGED",
    "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION",
)


def is_conflict(exc: BaseException) -> bool:
    """A Delta concurrent-modification conflict (or a lost race to create a table)."""
    if isinstance(exc, (TableCreateRace, *_conflict_types())):
        return True
    return error_condition(exc) in _CREATE_RACE_CONDITIONS


def retry_on_conflict(action: Callable[[], T], what: str, attempts: int = 6, base_s: float = 0.5) -> T:
    """Run ``action``; on a Delta conflict wait ``base_s * 2**i`` (+ jitter) and run it again, at
    most ``attempts`` times in all. ``action`` must be idempotent. Other errors pass through."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - filtered by is_conflict
            if not is_conflict(exc) or attempt == attempts:
                raise
            delay = base_s * 2 ** (attempt - 1) * (1 + random.random() / 2)
            log.warning("%s: Delta conflict (%s), attempt %d/%d, retrying in %.1f s",
                        what, type(exc).__name__, attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def publish_lock(tables_root: str | Path, timeout_s: float = 3600.0, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the exclusive publish lock of ``tables_root`` (waits up to ``timeout_s``).

    ``flock`` locks conflict between threads too (each call opens its own file description), and
    the kernel drops the lock when a crashed process exits, so a dead run never blocks the next.
    """
    lock_dir = Path(tables_root).expanduser().absolute() / LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / "publish.lock"
    started = time.monotonic()
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started > timeout_s:
                    raise LockTimeout(f"publish lock {path} still held by another run after {timeout_s:.0f} s "
                                      "(concurrency.lock_timeout_s)") from None
                time.sleep(poll_s)
        waited = time.monotonic() - started
        if waited > poll_s:
            log.info("publish lock %s acquired after %.1f s", path, waited)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
