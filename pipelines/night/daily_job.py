"""The nightly tokenization of one date, in three idempotent steps.

1. :func:`stage` (:mod:`pipelines.night.stage`) — validate the day's ``raw_events`` (bad rows -> ``quarantine`` with a reason),
   build one document per active (user, source) and one tabular vector per active user,
   spread them over Spark partitions, run encoder + MRQ-VAE in a pandas UDF and write the codes
   to ``staging_day_tokens`` (the date's partition is replaced).
2. :func:`check_quality` (:mod:`pipelines.night.quality`) — gates on the staged day (row counts, null/short codes, quarantine
   rate, collision rate, codebook utilization); failing gates raise before anything is
   published.
3. :func:`publish` (:mod:`pipelines.night.publish`) — replace the date in ``user_day_tokens`` when it
   changed (the ``user_token_history`` view follows it: :mod:`pipelines.lake.history`), update the
   collision-resolved ``user_tokens``, record the publish, then clear the staged rows.
   :func:`publish_dates` is the same for many dates (a backfill) in the same number of commits.

Each step reads only what the previous one wrote to Delta, so a crash at any point is repaired
by running the step (or the whole date) again, and the Airflow DAG can retry steps on their own
(the commits of publish and what a crash after each leaves: ``docs/design.md``).
"""
from __future__ import annotations

import logging
from dataclasses import asdict

from pyspark.sql import SparkSession

from pipelines.config.settings import PipelineSettings
from pipelines.night.day_run import open_run
from pipelines.night.publish import publish
from pipelines.night.quality import check_quality
from pipelines.night.stage import stage

log = logging.getLogger(__name__)


def run_day(spark: SparkSession, settings: PipelineSettings, event_date: str, run_id: str | None = None,
            tokenizer_version: str | None = None, generation: str | None = None) -> dict:
    """All three steps for one date (what one DAG run does), with the tokenizer the registry
    alias names at the start (or ``tokenizer_version``), resolved once, into its table
    generation (or ``generation``)."""
    run = open_run(spark, settings, event_date, run_id, tokenizer_version, generation)
    staged = stage(run)
    metrics = check_quality(run)
    published = publish(run)
    return {"stage": asdict(staged), **metrics, "publish": published}
