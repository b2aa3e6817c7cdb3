"""Many dates as one Spark job: ``u2qt backfill D1 D2`` (a range) or a list of dates.

1. every date with ``raw_events`` is staged in one pass (:func:`pipelines.stage.stage_dates`):
   one inference job over all of them, so each worker loads the models once, and the fixed
   cost of a night (session start, model load, dozens of small Spark jobs) is paid once;
2. then, oldest first, each date's quality gates and publish run exactly as in a nightly run,
   so the tables end as they would after running the dates one by one.

A date without any ``raw_events`` row is recorded in ``run_metrics`` (step ``backfill``, status
``empty``) and skipped. A failing gate stops the backfill at that date, loudly: the dates
before it are published, the ones after it are staged but not published (re-run them).

Cost: one pass over the dates' raw rows and inference over their documents (linear in the
active rows of the range), plus per date the gates and the publish of that date's rows.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict

from pyspark.sql import SparkSession

from pipelines import tables
from pipelines.day_run import DayRun, dates_predicate, open_run
from pipelines.daily_job import publish
from pipelines.quality import check_quality
from pipelines.settings import PipelineSettings
from pipelines.stage import stage_dates

log = logging.getLogger(__name__)


def backfill(spark: SparkSession, settings: PipelineSettings, event_dates: list[str],
             run_prefix: str = "backfill", tokenizer_version: str | None = None) -> dict[str, dict]:
    """Stage ``event_dates`` in one pass, then gate and publish them in date order, all with
    one tokenizer: ``tokenizer_version``, or the registry alias's resolved once at the start.

    Returns ``{event_date: {"status": "ok" | "empty", ...metrics}}`` in date order."""
    if not event_dates:
        return {}
    started = time.monotonic()
    stamp = int(time.time())
    dates = sorted(set(event_dates))
    raw = tables.read_table(spark, settings, tables.RAW_EVENTS.name).where(dates_predicate(dates))
    present = {str(r["event_date"]) for r in raw.select("event_date").distinct().collect()}
    # the tokenizer (and table generation) is resolved once, recorded on the first date with events
    anchor = next((d for d in dates if d in present), dates[0])
    first = open_run(spark, settings, anchor, f"{run_prefix}__{anchor}__{stamp}", tokenizer_version)
    runs = [first if d == anchor else DayRun(spark, first.settings, d, f"{run_prefix}__{d}__{stamp}", first.tokenizer)
            for d in dates]
    results: dict[str, dict] = {}
    for run in runs:
        if run.event_date not in present:
            run.record("backfill", "empty", 0.0, {"reason": "no raw_events rows on this date"})
            log.warning("backfill: %s has no raw_events rows: recorded as empty, skipped", run.event_date)
            results[run.event_date] = {"status": "empty"}
    busy = [run for run in runs if run.event_date in present]
    staged = stage_dates(busy) if busy else {}
    for run in busy:
        metrics = check_quality(run)
        published = publish(run)
        results[run.event_date] = {"status": "ok", "stage": asdict(staged[run.event_date]), **metrics,
                                   "publish": published}
    log.info("backfill: %d date(s) published, %d empty, in %.1f s", len(busy), len(runs) - len(busy),
             time.monotonic() - started)
    return dict(sorted(results.items()))
