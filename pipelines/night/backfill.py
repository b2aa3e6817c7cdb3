"""Many dates as one Spark job: ``u2qt backfill D1 D2`` (a range) or a list of dates.

1. every date with ``raw_events`` is staged in one pass (:func:`pipelines.night.stage.stage_dates`):
   one inference job over all of them, so each worker loads the models once, and the fixed
   cost of a night (session start, model load, dozens of small Spark jobs) is paid once;
2. then the gates of every date in one pass (:func:`pipelines.night.quality.check_quality_dates`: each
   aggregation grouped by date, one ``run_metrics`` commit), checked oldest first;
3. then every date up to the first failing one is published together
   (:func:`pipelines.night.daily_job.publish_dates`: one commit each to ``user_day_tokens``,
   ``user_tokens``, ``staging_day_tokens`` and ``run_metrics``), so the tables end as they would
   after running the dates one by one, oldest first (tested row for row).

A date without any ``raw_events`` row (:func:`dates_with_events`) is recorded in ``run_metrics`` (step ``backfill``, status
``empty``) and skipped. A failing gate stops the backfill at that date, loudly: the dates
before it are published, the ones after it are staged but neither gated nor published (re-run
them). A crash anywhere is repaired by running the backfill again: every write is idempotent.

Cost: one pass over the dates' raw rows and inference over their documents (linear in the
active rows of the range), then a fixed number of Spark jobs and Delta commits for the gates and
the publish of all dates together (linear in their rows, not in the number of dates).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.lake import tables
from pipelines.lake.lake import Lake
from pipelines.night.day_run import DayRun, StepRecord, dates_predicate, open_run, record_steps
from pipelines.night.publish import publish_dates
from pipelines.night.quality import check_quality_dates
from pipelines.config.settings import PipelineSettings
from pipelines.night.stage import stage_dates

log = logging.getLogger(__name__)


def dates_with_events(spark: SparkSession, settings: PipelineSettings, dates: list[str]) -> set[str]:
    """The ``dates`` that hold ``raw_events`` rows: in their ``event_date`` partition, or with a null
    ``event_date`` and an ``event_ts`` on that date (the night quarantines those, so such a date is
    run, not skipped as empty). Reads the dates' partitions and the null one."""
    raw = Lake(spark, settings).read(tables.RAW_EVENTS.name)
    night = F.coalesce(F.col("event_date"), F.to_date("event_ts"))
    rows = (raw.where(dates_predicate(dates) + " OR event_date IS NULL")
            .where(night.isin([F.lit(d).cast("date") for d in dates])).select(night.alias("night")).distinct().collect())
    return {str(r["night"]) for r in rows}


def backfill(spark: SparkSession, settings: PipelineSettings, event_dates: list[str],
             run_prefix: str = "backfill", tokenizer_version: str | None = None,
             generation: str | None = None) -> dict[str, dict]:
    """Stage ``event_dates`` in one pass, then gate and publish them in date order, all with
    one tokenizer: ``tokenizer_version``, or the registry alias's resolved once at the start, into
    ``generation`` (default: the one of that version, :func:`pipelines.night.day_run.open_run`).

    Returns ``{event_date: {"status": "ok" | "empty", ...metrics}}`` in date order."""
    if not event_dates:
        return {}
    started = time.monotonic()
    stamp = int(time.time())
    dates = sorted(set(event_dates))
    present = dates_with_events(spark, settings, dates)
    # the tokenizer (and table generation) is resolved once, recorded on the first date with events
    anchor = next((d for d in dates if d in present), dates[0])
    first = open_run(spark, settings, anchor, f"{run_prefix}__{anchor}__{stamp}", tokenizer_version, generation)
    runs = [first if d == anchor else DayRun(spark, settings, d, f"{run_prefix}__{d}__{stamp}", first.tokenizer,
                                             first.generation)
            for d in dates]
    results: dict[str, dict] = {}
    empty = [run for run in runs if run.event_date not in present]
    record_steps([StepRecord(run, "backfill", "empty", 0.0, {"reason": "no raw_events rows on this date"})
                  for run in empty])
    for run in empty:
        results[run.event_date] = {"status": "empty"}
    if empty:
        shown = ", ".join(r.event_date for r in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        log.warning("backfill: %d of %d date(s) have no raw_events rows, recorded as empty and skipped: %s",
                    len(empty), len(dates), shown)
    busy = [run for run in runs if run.event_date in present]
    failure = None
    if busy:
        staged = stage_dates(busy)
        gated, failure = check_quality_dates(busy)
        published = publish_dates([run for run in busy if run.event_date in gated]) if gated else {}
        for d, metrics in gated.items():
            results[d] = {"status": "ok", "stage": asdict(staged[d]), **metrics, "publish": published[d]}
    log.info("backfill: %d date(s) published, %d empty, in %.1f s", len(results) - len(empty), len(empty),
             time.monotonic() - started)
    if failure is not None:
        raise failure
    return dict(sorted(results.items()))
