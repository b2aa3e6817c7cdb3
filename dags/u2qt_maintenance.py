"""Airflow DAG ``u2qt_maintenance``: Delta upkeep of the u2qt tables, once a day after the night.

One task, one step (``maintain``: :func:`pipelines.ops.maintenance.maintain`): compact closed history
periods into ``user_token_history_base``, set log retention, OPTIMIZE (Z-order on user_id for the
history base, ``user_tokens`` and ``user_profile``) and VACUUM. It runs at 12:00 UTC, away from
the nightly ``u2qt_daily`` run, with one active run at a time and no catchup; it is idempotent, so
a retry or a skipped day is harmless (the next run compacts whatever is pending). Built like
``u2qt_daily`` (:mod:`pipelines.deploy.dag_builder`: in-process or spark-submit, alert hook, start date).
"""
from __future__ import annotations

from datetime import timedelta

from pipelines.deploy.dag_builder import dag_settings, step_task, u2qt_dag

settings = dag_settings()

with u2qt_dag(
    "u2qt_maintenance",
    description="Compact the token history, OPTIMIZE / Z-order and VACUUM the u2qt Delta tables",
    schedule="0 12 * * *",
    settings=settings,
    catchup=False, max_active_runs=1, retries=1, retry_delay=timedelta(minutes=15),
    doc_md=__doc__,
):
    step_task("maintain", settings, dated=False)
