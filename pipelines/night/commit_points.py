"""Named points right after each Delta commit of publish, where a fault drill stops the process.

Publish makes a date visible in a fixed order of commits (:data:`PUBLISH_COMMITS`; what a crash
after each one leaves, and how both retry styles heal it, is in ``docs/design.md``). Each commit
is followed by :func:`reached` with its name. Normally that is one comparison. A test arms one
point with :func:`crash_after`, and the process then stops there with :class:`SimulatedCrash`.
An operator's fault drill sets ``U2QT_CRASH_AFTER=<point>`` and the process kills itself with
SIGKILL at that point, as a lost executor or a killed Airflow task would.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Iterator

log = logging.getLogger(__name__)

#: publish's commits in the order they happen; ``user_day_tokens.uncover`` only when a re-published
#: date lies in a compacted history period, ``run_metrics`` before ``staging_day_tokens`` so that a
#: date's staged rows are never gone while its publish is unrecorded
PUBLISH_COMMITS = ("user_day_tokens.uncover", "user_day_tokens", "user_tokens", "run_metrics", "staging_day_tokens")
ENV_VAR = "U2QT_CRASH_AFTER"

_armed: set[str] = set()


class SimulatedCrash(BaseException):
    """Raised at an armed point. It is a BaseException so that no ``except Exception`` handler
    records, retries or cleans up anything: the process stops as it would after a SIGKILL."""


def reached(point: str) -> None:
    """Called right after the step that commits ``point`` (one of :data:`PUBLISH_COMMITS`), also
    when that step found nothing to write."""
    if point in _armed:
        _armed.discard(point)
        raise SimulatedCrash(f"simulated crash after commit {point}")
    if os.environ.get(ENV_VAR) == point:
        log.warning("%s=%s: killing this process after that commit (fault drill)", ENV_VAR, point)
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def crash_after(point: str) -> Iterator[None]:
    """Arm ``point`` once for the block: the first time it is reached the process 'dies'."""
    _armed.add(point)
    try:
        yield
    finally:
        _armed.discard(point)
