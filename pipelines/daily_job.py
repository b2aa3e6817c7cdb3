"""The nightly tokenization of one date, in three idempotent steps.

1. :func:`stage` (:mod:`pipelines.stage`) — validate the day's ``raw_events`` (bad rows -> ``quarantine`` with a reason),
   build one document per active (user, source) and one tabular vector per active user,
   spread them over Spark partitions, run encoder + MRQ-VAE in a pandas UDF and write the codes
   to ``staging_day_tokens`` (the date's partition is replaced).
2. :func:`check_quality` (:mod:`pipelines.quality`) — gates on the staged day (row counts, null/short codes, quarantine
   rate, collision rate, codebook utilization); failing gates raise before anything is
   published.
3. :func:`publish` — replace the date in ``user_day_tokens`` when it changed (the
   ``user_token_history`` view follows it: :mod:`pipelines.history`) and update the
   collision-resolved ``user_tokens``. :func:`publish_dates` is the same for many dates (a
   backfill) in the same number of commits as one.

Each step reads only what the previous one wrote to Delta, so a crash at any point is repaired
by running the step (or the whole date) again, and the Airflow DAG can retry steps on their own.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines import tables
from pipelines.concurrency import publish_lock, retry_on_conflict
from pipelines.day_run import (DayRun, StepRecord, TokenizerInfo, dates_predicate, day_tuples, default_run_id,
                               load_tokenizer_info, open_run, record_steps)
from pipelines.history import publish_day_tokens
from pipelines.identities import update_identities
from pipelines.quality import QualityGateFailed, check_quality, collision_rates, level_utilization
from pipelines.settings import PipelineSettings
from pipelines.stage import StageResult, StagingCleared, clear_published_staging, record_failure, stage

__all__ = [
    "DayRun", "TokenizerInfo", "StageResult", "QualityGateFailed", "load_tokenizer_info", "default_run_id", "open_run",
    "stage", "check_quality", "publish", "publish_dates", "run_day", "publish_day_tokens", "update_identities",
    "day_tuples", "collision_rates", "level_utilization",
]

log = logging.getLogger(__name__)


def publish(run: DayRun) -> dict:
    """Make the staged (and gated) day visible: fact table, history, identities
    (:func:`publish_dates` of one date)."""
    return publish_dates([run])[run.event_date]


def publish_dates(runs: list[DayRun]) -> dict[str, dict]:
    """Make the staged (and gated) dates of ``runs`` visible, as publishing them one by one in
    date order would, in the same three writes as one date: the changed dates of
    ``user_day_tokens`` in one ``replaceWhere`` commit, ``user_tokens`` in one MERGE, the
    published staging in one delete; then one ``run_metrics`` commit. Returns ``{event_date: metrics}``.

    One publish at a time per ``tables_root`` (:func:`publish_lock`); a write that meets a Delta
    conflict is retried whole with backoff (each of the writes is idempotent, so is a re-run
    after a crash between them)."""
    started = time.monotonic()
    runs = sorted(runs, key=lambda r: r.event_date)
    limits = runs[0].settings.concurrency
    what = f"publish {runs[0].event_date}" + (f"..{runs[-1].event_date} ({len(runs)} dates)" if len(runs) > 1 else "")
    try:
        with publish_lock(runs[0].settings.tables_root, limits.lock_timeout_s):
            metrics = retry_on_conflict(lambda: _publish_writes(runs), what,
                                        limits.conflict_retries, limits.retry_base_s)
    except Exception as exc:
        record_failure(runs, "publish", started, exc)
        raise
    seconds = (time.monotonic() - started) / len(runs)   # the writes are shared: each date gets its share
    record_steps([StepRecord(r, "publish", "ok", seconds, metrics[r.event_date]) for r in runs])
    for r in runs:
        log.info("published %s: %d token rows", r.event_date, metrics[r.event_date]["token_rows"])
    return metrics


def _publish_writes(runs: list[DayRun]) -> dict[str, dict]:
    run, dates = runs[0], [r.event_date for r in runs]
    staged = run.read("staging_day_tokens").where(dates_predicate(dates)).localCheckpoint(eager=True)
    counts = {str(r["event_date"]): r for r in staged.groupBy("event_date").agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_if(F.col("tokenizer_version") != run.tokenizer.version).alias("foreign"),
        F.count_if(F.col("codes").isNotNull()).alias("token_rows")).collect()}
    _refuse_cleared_staging(runs, [d for d in dates if d not in counts])
    mismatched = [d for d in dates if d in counts and counts[d]["foreign"]]
    if mismatched:
        raise tables.TokenizerVersionMismatch(
            f"staging_day_tokens for {', '.join(mismatched)} was written by another tokenizer; re-run the stage step")
    day_tokens: DataFrame = staged.where(F.col("codes").isNotNull())
    changed = publish_day_tokens(runs, day_tokens)
    identities = update_identities(runs, day_tokens)
    cleared = clear_published_staging(runs)
    return {d: {"token_rows": int(counts[d]["token_rows"]) if d in counts else 0, "history_rows_changed": changed[d],
                "identities_changed": identities[d], "staging_rows_cleared": cleared.get(d, 0)} for d in dates}


def _refuse_cleared_staging(runs: list[DayRun], unstaged: list[str]) -> None:
    """A date whose staging was already published and cleared must not be re-published empty."""
    run = runs[0]
    if not unstaged or not tables.table_exists(run.spark, run.path(tables.RUN_METRICS.name)):
        return
    done = sorted({str(r["event_date"]) for r in run.read("run_metrics").where(dates_predicate(unstaged))
                   .where("step = 'publish' AND status = 'ok'").select("event_date").distinct().collect()})
    if done:
        raise StagingCleared(
            f"staging_day_tokens holds nothing for {', '.join(done)}: the date was already published and its "
            "staged rows cleared (staging.keep_days); re-run the stage step before publishing it again")


def run_day(spark: SparkSession, settings: PipelineSettings, event_date: str, run_id: str | None = None,
            tokenizer_version: str | None = None) -> dict:
    """All three steps for one date (what one DAG run does), with the tokenizer the registry
    alias names at the start (or ``tokenizer_version``), resolved once."""
    run = open_run(spark, settings, event_date, run_id, tokenizer_version)
    staged = stage(run)
    metrics = check_quality(run)
    published = publish(run)
    return {"stage": asdict(staged), **metrics, "publish": published}
