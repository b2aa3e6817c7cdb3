"""Airflow DAG ``u2qt_maintenance``: Delta upkeep of the u2qt tables, once a day after the night.

One task, one call (:func:`pipelines.maintenance.maintain`): compact closed history periods into
``user_token_history_base``, set log retention, OPTIMIZE (Z-order on user_id for the history base,
``user_tokens`` and ``user_profile``) and VACUUM. It runs at 12:00 UTC, away from the nightly
``u2qt_daily`` run, with one active run at a time; it is idempotent, so a retry or a skipped day
is harmless (the next run compacts whatever is pending). Configuration as for ``u2qt_daily``
(``U2QT_PIPELINE_CONFIG``, ``U2QT_TABLES_ROOT``, ...).
"""
from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="u2qt_maintenance",
    description="Compact the token history, OPTIMIZE / Z-order and VACUUM the u2qt Delta tables",
    schedule="0 12 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=15)},
    tags=["u2qt"],
)
def u2qt_maintenance():
    @task
    def maintain() -> dict:
        """pipelines.maintenance.maintain on the configured lake (one call: easy to spark-submit)."""
        from pipelines.maintenance import maintain as run_maintenance
        from pipelines.settings import load_settings
        from pipelines.spark_session import get_spark

        settings = load_settings(os.environ.get("U2QT_PIPELINE_CONFIG"))
        return run_maintenance(get_spark(settings.spark_profile, app_name="u2qt_maintenance"), settings)

    maintain()


u2qt_maintenance()
