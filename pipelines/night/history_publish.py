"""Publish's write of the fact table ``user_day_tokens``: only the dates whose rows changed, in one
commit, and the compacted history periods those dates fall in uncovered first (the history view
of :mod:`pipelines.lake.history` then reads them from ``user_day_tokens``)."""
from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.lake import tables
from pipelines.lake.lake import Lake
from pipelines.lake.history import covered_periods, period_start
from pipelines.night import commit_points
from pipelines.night.day_run import DayRun, dates_predicate

log = logging.getLogger(__name__)


def publish_day_tokens(runs: list[DayRun], day_tokens: DataFrame) -> dict[str, int]:
    """Replace the partitions of ``user_day_tokens`` of the dates of ``runs`` that differ from
    ``day_tokens`` (their rows), all in ONE ``replaceWhere`` commit over those dates.

    Returns per date the number of (user, source) entries that were added, removed or changed
    (one Spark job compares every date; a date at 0, e.g. a re-run of unchanged input, is not
    written, and with all at 0 nothing is). Dates inside a compacted period first drop that
    period's coverage, so the view never serves stale compacted entries (a crash between the two
    writes leaves the view reading ``user_day_tokens``: still exact)."""
    run = runs[0]
    dates = [r.event_date for r in runs]
    run.lake.ensure(tables.USER_DAY_TOKENS, run.tokenizer.version)
    key = ["user_id", "event_date", "source"]
    old = run.read(tables.USER_DAY_TOKENS.name).where(dates_predicate(dates)).select(
        *key, F.col("codes").alias("old_codes"), F.col("tokenizer_version").alias("old_version"))
    new = day_tokens.select(*key, "codes", "tokenizer_version")
    rows = (new.join(old, key, "full_outer")
            .where(~F.col("codes").eqNullSafe(F.col("old_codes"))
                   | ~F.col("tokenizer_version").eqNullSafe(F.col("old_version")))
            .groupBy("event_date").count().collect())
    found = {str(r["event_date"]): int(r["count"]) for r in rows}
    changed = {d: found.get(d, 0) for d in dates}
    todo = [d for d in dates if changed[d]]
    if not todo:
        log.info("history: user_day_tokens already holds %s exactly: nothing written", ", ".join(dates))
        return changed
    _uncover(run.lake, [date.fromisoformat(d) for d in todo])
    commit_points.reached("user_day_tokens.uncover")
    replaced = dates_predicate(todo)
    run.replace_partition(day_tokens.where(replaced), tables.USER_DAY_TOKENS, replaced)
    commit_points.reached("user_day_tokens")
    log.info("history: %s (user, source) entries added, removed or changed",
             ", ".join(f"{d}: {changed[d]}" for d in todo))
    return changed


def _uncover(lake: Lake, days: list[date]) -> None:
    """Remove the coverage of the compacted periods holding ``days`` that cover them (one delete)."""
    from delta.tables import DeltaTable

    covered, period_days = covered_periods(lake), lake.settings.history.period_days
    inside = [day for day in days if covered.get(period_start(day, period_days), date.min) >= day]
    if not inside:
        return
    hit = sorted({period_start(day, period_days) for day in inside})
    DeltaTable.forPath(lake.spark, lake.path(tables.HISTORY_PERIODS.name)).delete(
        F.col("period_start").isin(hit))
    log.info("history: %s re-published inside compacted period(s) %s: the view reads them from "
             "user_day_tokens until `u2qt maintain` compacts them again", [d.isoformat() for d in inside],
             [h.isoformat() for h in hit])
