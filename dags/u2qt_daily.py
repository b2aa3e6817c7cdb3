"""Airflow DAG ``u2qt_daily``: tokenize one day of user behaviour into Delta tables.

One run per daily data interval; the run for interval [D, D+1) tokenizes date D once that day
is over. Its three tasks are the idempotent steps of :mod:`pipelines.daily_job` (stage ->
quality gates -> publish): each reads what the previous one wrote to Delta, so any task can be
retried or re-run alone, and a failed gate stops the run before anything is published.

Configuration comes from ``conf/pipeline.yaml`` (or the file named by ``U2QT_PIPELINE_CONFIG``);
its ``${VAR:-default}`` entries make tables_root, model_dir and the Spark profile settable per
deployment. Backfills: ``airflow backfill create --dag-id u2qt_daily --from-date ... --to-date ...``
(or ``u2qt backfill``); dates may be processed in any order and several at once: ``init_tables``
creates missing tables before staging, stages run in parallel, and ``publish`` runs in the pool
``u2qt_publish`` (one slot; :func:`pipelines.airflow_runner.prepare_airflow_home` creates it,
``airflow pools set u2qt_publish 1 "u2qt publish"`` on a deployment).
"""
from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from pipelines.concurrency import PUBLISH_POOL


def _day_run():
    """Settings, Spark session and the :class:`DayRun` of the current Airflow run."""
    from pipelines.daily_job import DayRun, load_tokenizer_info
    from pipelines.settings import load_settings
    from pipelines.spark_session import get_spark

    context = get_current_context()
    settings = load_settings(os.environ.get("U2QT_PIPELINE_CONFIG"))
    spark = get_spark(settings.spark_profile, app_name="u2qt_daily")
    # scheduled runs: logical_date == data_interval_start == the day to tokenize; a manual run or
    # dag.test(logical_date=D) names the day itself (its inferred interval would end at D)
    event_date = context["logical_date"].date().isoformat()
    return DayRun(spark, settings, event_date, context["run_id"], load_tokenizer_info(settings))


@dag(
    dag_id="u2qt_daily",
    description="Tokenize the day's active users into user_day_tokens / user_token_history / user_tokens",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # dates stage side by side; their publish tasks queue for the one slot of the u2qt_publish pool
    max_active_runs=4,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["u2qt"],
)
def u2qt_daily():
    @task
    def init_tables() -> list[str]:
        """Create missing output tables first, so parallel runs never race to create them."""
        from pipelines.tables import ensure_all

        run = _day_run()
        return ensure_all(run.spark, run.settings, run.tokenizer.version)

    @task
    def stage() -> dict:
        """Validate inputs (quarantine bad rows), build documents, run inference into staging."""
        from dataclasses import asdict

        from pipelines.daily_job import stage as stage_day

        return asdict(stage_day(_day_run()))

    @task
    def quality_gates(staged: dict) -> dict:
        """Fail loudly, before publishing, if the staged day breaks a quality gate."""
        from pipelines.daily_job import check_quality

        return {"staged": staged, **check_quality(_day_run())}

    @task(pool=PUBLISH_POOL)
    def publish(metrics: dict) -> dict:
        """Replace the date in user_day_tokens, MERGE history, update collision-resolved identities."""
        from pipelines.daily_job import publish as publish_day

        return {**publish_day(_day_run()), "active_users": metrics["active_users"]}

    staged = stage()
    init_tables() >> staged
    publish(quality_gates(staged))


u2qt_daily()
