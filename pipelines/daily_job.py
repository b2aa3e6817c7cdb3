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
   collision-resolved ``user_tokens``.

Each step reads only what the previous one wrote to Delta, so a crash at any point is repaired
by running the step (or the whole date) again, and the Airflow DAG can retry steps on their own.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines import tables
from pipelines.concurrency import publish_lock, retry_on_conflict
from pipelines.day_run import DayRun, TokenizerInfo, day_tuples, default_run_id, load_tokenizer_info, open_run
from pipelines.history import publish_day_tokens
from pipelines.identities import update_identities
from pipelines.quality import QualityGateFailed, check_quality, collision_rate, level_utilization
from pipelines.settings import PipelineSettings
from pipelines.stage import StageResult, StagingCleared, clear_published_staging, record_failure, stage

__all__ = [
    "DayRun", "TokenizerInfo", "StageResult", "QualityGateFailed", "load_tokenizer_info", "default_run_id", "open_run",
    "stage", "check_quality", "publish", "run_day", "publish_day_tokens", "update_identities", "day_tuples",
    "collision_rate", "level_utilization",
]

log = logging.getLogger(__name__)


def publish(run: DayRun) -> dict:
    """Make the staged (and gated) day visible: fact table, history, identities.

    One date at a time per ``tables_root`` (:func:`publish_lock`); a write that meets a Delta
    conflict is retried whole with backoff (each of the three writes is idempotent)."""
    started = time.monotonic()
    limits = run.settings.concurrency
    try:
        with publish_lock(run.settings.tables_root, limits.lock_timeout_s):
            metrics = retry_on_conflict(lambda: _publish_writes(run), f"publish {run.event_date}",
                                        limits.conflict_retries, limits.retry_base_s)
    except Exception as exc:
        record_failure([run], "publish", started, exc)
        raise
    run.record("publish", "ok", time.monotonic() - started, metrics)
    log.info("published %s: %d token rows", run.event_date, metrics["token_rows"])
    return metrics


def _publish_writes(run: DayRun) -> dict:
    staged = run.read("staging_day_tokens").where(run.date_predicate)
    _refuse_cleared_staging(run, staged)
    mismatched = staged.where(F.col("tokenizer_version") != run.tokenizer.version).limit(1).count()
    if mismatched:
        raise tables.TokenizerVersionMismatch(
            f"staging_day_tokens for {run.event_date} was written by another tokenizer; re-run the stage step")
    day_tokens = staged.where(F.col("codes").isNotNull()).localCheckpoint(eager=True)
    metrics = {
        "token_rows": day_tokens.count(),
        "history_rows_changed": publish_day_tokens(run, day_tokens),
        "identities_changed": update_identities(run, day_tokens),
    }
    metrics["staging_rows_cleared"] = clear_published_staging(run)
    return metrics


def _refuse_cleared_staging(run: DayRun, staged) -> None:
    """A date whose staging was already published and cleared must not be re-published empty."""
    if staged.limit(1).count():
        return
    if not tables.table_exists(run.spark, run.path(tables.RUN_METRICS.name)):
        return
    done = run.read("run_metrics").where(run.date_predicate).where("step = 'publish' AND status = 'ok'")
    if done.limit(1).count():
        raise StagingCleared(
            f"staging_day_tokens holds nothing for {run.event_date}: the date was already published and its "
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
