"""The data's cadence against the windows the pipeline reads: do the configured windows fit how
often users are active?

The windows are sized for daily data: with weekly (or rarer) activity a window of a few weeks
silently leaves out most users. Three settings are windows over days, each ending at a date ``E``
and holding the dates ``[E - N + 1, E]`` (``(E - N, E]``, ``N`` days, both bounds of the closed
form inclusive):

* ``features.window_days``: ``user_features`` as of ``E`` (:mod:`pipelines.features.user_features`);
* ``sequence_encoder.history_days``: what ``u2qt train-sequence E`` trains on (:mod:`pipelines.features.sequence_encoder`);
* ``history.max_days``: the days ``user_token_history`` keeps, ``E`` the newest published date
  (:mod:`pipelines.lake.history`).

A user is dropped by a window when none of its active dates lies inside it.
:func:`cadence_differences` (``u2qt check-inputs``) measures, over the whole ``raw_events`` and
with the windows ending at its newest ``event_date``: the days between a user's consecutive
active dates, and per window the users and (user, date) rows it drops. It warns about a window
that keeps under ``inputs.min_window_user_share`` of the users, with the smallest window that
would keep that share. :func:`check_window` is the cheap check the commands run before they read
their window (``u2qt features``, ``u2qt train-sequence``): one log line when it is too short.

Cost: the newest date (a partition column), then ONE aggregation job over the distinct
``(user_id, event_date)`` pairs: a window ``lag``/``lead`` per user, then counts and
``percentile_approx`` (exact at these ranks below ~10,000 values per quantile summary,
within 1/10,000 of the rank above). Percentiles are the nearest-rank ones: the ``p``-th is the
``ceil(p * n)``-th smallest value.
"""
from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import NamedTuple

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipelines.config.settings import PipelineSettings

from pipelines.night.findings import Difference

__all__ = ["WINDOW_KEYS", "Cadence", "WindowDrop", "Coverage", "configured_windows", "measure_cadence",
           "cadence_differences", "window_coverage", "check_window"]

log = logging.getLogger(__name__)

#: The window settings, in the order they are reported.
WINDOW_KEYS = ("features.window_days", "sequence_encoder.history_days", "history.max_days")
SHARE_KEY = "inputs.min_window_user_share"
# a nearest-rank percentile p is the ceil(p * n)-th value; p * n a float a hair above an integer
# (0.9 * n) would round up one rank too far
_EPS = 1e-9


class WindowDrop(NamedTuple):
    """What one window of ``days`` days ending at the newest date leaves out."""

    key: str
    days: int
    first: date            # oldest date inside the window
    users_dropped: int     # users with no active date in [first, newest]
    rows_dropped: int      # (user, date) pairs before first


class Cadence(NamedTuple):
    """How often users are active, and what the windows drop, over ``[oldest, newest]``."""

    oldest: date
    newest: date
    users: int                  # users with at least one active date
    rows: int                   # distinct (user, date) pairs
    single_date_users: int      # users active on one date only
    gap_median: int | None      # days between a user's consecutive active dates (None: no user has two)
    gap_p90: int | None
    keeping_days: int           # smallest window ending at newest that keeps the configured share of users
    windows: list[WindowDrop]


class Coverage(NamedTuple):
    """Users with rows up to ``as_of`` and those a window ending at ``as_of`` holds."""

    as_of: date
    first: date
    users: int
    in_window: int
    keeping_days: int | None    # smallest window keeping the configured share (None: no users)


def configured_windows(settings: PipelineSettings) -> dict[str, int]:
    """``{setting key: days}`` of the windows of ``settings`` (:data:`WINDOW_KEYS`)."""
    return {"features.window_days": settings.features.window_days,
            "sequence_encoder.history_days": settings.sequence_encoder.history_days,
            "history.max_days": settings.history.max_days}


def _active_dates(frame: DataFrame) -> DataFrame:
    """Distinct ``(user_id, event_date)`` of ``frame`` (rows missing either are nobody's activity)."""
    return (frame.where(F.col("user_id").isNotNull() & F.col("event_date").isNotNull())
            .select("user_id", "event_date").distinct())


def _keeping_days(recency: Column, share: float) -> Column:
    """The smallest window keeping ``share`` of the users, from each user's ``recency`` (days from
    its last active date to the window's end): the ``ceil(share * users)``-th smallest recency + 1."""
    return F.percentile_approx(recency, max(share - _EPS, 0.0)) + 1


def measure_cadence(events: DataFrame, windows: dict[str, int], share: float) -> Cadence | None:
    """The :class:`Cadence` of ``events`` (``user_id``, ``event_date``) and the drops of
    ``windows`` (``{key: days}``) ending at its newest date; None when it has no dated rows."""
    bounds = events.where(F.col("event_date").isNotNull()).agg(F.min("event_date"), F.max("event_date")).first()
    oldest, newest = bounds[0], bounds[1]
    if newest is None:
        return None
    by_user = Window.partitionBy("user_id").orderBy("event_date")
    dated = _active_dates(events).select(
        "event_date",
        F.datediff("event_date", F.lag("event_date").over(by_user)).alias("gap"),
        F.lead("event_date").over(by_user).isNull().alias("last"))
    last, day = F.col("last"), F.col("event_date")
    firsts = {key: newest - timedelta(days=n - 1) for key, n in windows.items()}
    aggregates = [
        F.count(F.lit(1)).alias("rows"),
        F.count_if(last).alias("users"),
        F.count_if(last & F.col("gap").isNull()).alias("single"),
        F.percentile_approx("gap", [0.5 - _EPS, 0.9 - _EPS]).alias("gaps"),
        _keeping_days(F.when(last, F.datediff(F.lit(newest), day)), share).alias("keeping"),
    ]
    for i, first in enumerate(firsts.values()):
        aggregates += [F.count_if(last & (day < F.lit(first))).alias(f"users_{i}"),
                       F.count_if(day < F.lit(first)).alias(f"rows_{i}")]
    row = dated.agg(*aggregates).first()
    gaps = row["gaps"] or [None, None]
    drops = [WindowDrop(key, windows[key], first, int(row[f"users_{i}"]), int(row[f"rows_{i}"]))
             for i, (key, first) in enumerate(firsts.items())]
    return Cadence(oldest, newest, int(row["users"]), int(row["rows"]), int(row["single"]),
                   gaps[0], gaps[1], int(row["keeping"]), drops)


def _share(n: int, total: int) -> str:
    return f"{n:,} of {total:,}"


def _percent(n: int, total: int) -> str:
    return f"{100.0 * n / max(total, 1):.2f} %"


def cadence_differences(events: DataFrame, settings: PipelineSettings) -> list[Difference]:
    """``u2qt check-inputs``' lines about ``raw_events``' cadence (a ``note``) and, per configured
    window, what it drops (``warning`` when it keeps under ``inputs.min_window_user_share`` of
    the users, with the smallest window that keeps it; ``note`` otherwise). Reads all of ``events``."""
    share = settings.inputs.min_window_user_share
    cadence = measure_cadence(events, configured_windows(settings), share)
    if cadence is None:
        return []
    c = cadence
    if c.gap_median is None:
        gaps = "no user is active on two dates"
    else:
        gaps = f"days between a user's consecutive active dates: median {c.gap_median}, p90 {c.gap_p90}"
    out = [Difference("note", "raw_events", (
        f"cadence over {c.oldest}..{c.newest}: {gaps}; {_share(c.single_date_users, c.users)} users "
        f"({_percent(c.single_date_users, c.users)}) active on a single date; {c.rows:,} (user, date) rows"))]
    for w in c.windows:
        message = (f"{w.days} days ({w.first}..{c.newest}, ending at the newest event_date) drop "
                   f"{_share(w.users_dropped, c.users)} active users ({_percent(w.users_dropped, c.users)}) and "
                   f"{_share(w.rows_dropped, c.rows)} (user, date) rows ({_percent(w.rows_dropped, c.rows)})")
        if c.users - w.users_dropped < share * c.users - _EPS:
            out.append(Difference("warning", w.key, (
                f"{message}: it keeps under {SHARE_KEY} {share:g} of them; set {w.key}: {c.keeping_days} "
                f"or more to keep {share:.0%}")))
        else:
            out.append(Difference("note", w.key, message))
    return out


def window_coverage(days: DataFrame, as_of: str, window_days: int, share: float) -> Coverage:
    """The users of ``days`` (``user_id``, ``event_date``; e.g. ``user_day_tokens``) with rows up
    to ``as_of``, and those with a row in the window ``[as_of - window_days + 1, as_of]``: one
    aggregation (per user its last date, then counts)."""
    end = date.fromisoformat(as_of)
    first = end - timedelta(days=window_days - 1)
    per_user = (days.where(F.col("user_id").isNotNull() & (F.col("event_date") <= F.lit(end)))
                .groupBy("user_id").agg(F.max("event_date").alias("last")))
    row = per_user.agg(F.count(F.lit(1)).alias("users"), F.count_if(F.col("last") >= F.lit(first)).alias("inside"),
                       _keeping_days(F.datediff(F.lit(end), "last"), share).alias("keeping")).first()
    keeping = int(row["keeping"]) if row["keeping"] is not None else None
    return Coverage(end, first, int(row["users"]), int(row["inside"]), keeping)


def check_window(days: DataFrame, as_of: str, window_days: int, key: str, settings: PipelineSettings,
                 table: str = "user_day_tokens") -> Coverage:
    """:func:`window_coverage`, and one warning line when the window holds under
    ``inputs.min_window_user_share`` of the users with rows up to ``as_of``, naming ``key``."""
    share = settings.inputs.min_window_user_share
    coverage = window_coverage(days, as_of, window_days, share)
    c = coverage
    if c.users and c.in_window < share * c.users - _EPS:
        log.warning("%s %d (%s..%s) holds %s users with %s rows up to %s (%s), under %s %g: "
                    "set %s: %d or more (see `u2qt check-inputs` for the data's cadence)",
                    key, window_days, c.first, c.as_of, _share(c.in_window, c.users), table, c.as_of,
                    _percent(c.in_window, c.users), SHARE_KEY, share, key, c.keeping_days)
    return coverage
