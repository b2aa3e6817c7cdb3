"""Airflow DAG ``u2qt_retrain``: sample -> train -> evaluate -> promote a new tokenizer version.

* ``sample``: the training window, every date of ``raw_events`` but the last
  ``gates.heldout_days`` (left out for the evaluation); the sample itself is a seeded hash of
  (user, date), so the same window always gives the same inputs;
* ``train``: embed the sample, train the MRQ-VAE, write the immutable bundle and register it
  (MLflow model registry, :mod:`pipelines.tokenizer.registry`);
* ``evaluate``: the gates on the held-out days, recorded on the registry version;
* ``promote``: moves the ``champion`` alias only when every gate passed; otherwise the task
  fails (the version stays registered, nothing changes for the nights). Nights that started
  earlier keep the version they resolved.

Scheduled on the Asset ``u2qt_tokenizer_retrain_due``, which the ``u2qt_daily`` night emits
when its drift first marks the promoted version due for retraining (``drift.fail_*``,
:mod:`pipelines.night.drift`); ``U2QT_RETRAIN_SCHEDULE`` (a cron string, e.g. ``0 14 * * 0``)
adds a time schedule: the DAG then runs on either. Manual runs as before.
A new version's codes reach analysts through ``u2qt_retokenize``. Configuration as for
``u2qt_daily`` (``U2QT_PIPELINE_CONFIG``).
"""
from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import task

from pipelines.deploy.dag_builder import dag_settings, retrain_due_asset, u2qt_dag


def _settings_and_spark(app_name: str):
    from pipelines.config.settings import load_settings
    from pipelines.runtime.spark_session import get_spark

    settings = load_settings(os.environ.get("U2QT_PIPELINE_CONFIG"))
    return settings, get_spark(settings.spark_profile, app_name=app_name)


settings = dag_settings()


def _schedule():
    """The retrain Asset, or it or a cron (``U2QT_RETRAIN_SCHEDULE``)."""
    cron = os.environ.get("U2QT_RETRAIN_SCHEDULE")
    if not cron:
        return [retrain_due_asset()]
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable

    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=retrain_due_asset())


with u2qt_dag(
    "u2qt_retrain",
    description="Train, evaluate and (if its gates pass) promote a new u2qt tokenizer version",
    schedule=_schedule(),
    settings=settings, max_active_runs=1, catchup=False, retries=0, doc_md=__doc__,
):
    @task
    def sample() -> dict:
        """The training window: raw_events dates before the held-out days."""
        from datetime import date

        from pipelines.lake.lake import Lake
        from pipelines.tokenizer.train_job import heldout_dates

        settings, spark = _settings_and_spark("u2qt_retrain_sample")
        first = Lake(spark, settings).read("raw_events").agg({"event_date": "min"}).first()[0]
        end = date.fromisoformat(heldout_dates(spark, settings)[0]) - timedelta(days=1)
        return {"start_date": str(first), "end_date": end.isoformat()}

    @task
    def train(window: dict) -> str:
        """Train on the window, write the bundle, register the version; returns it."""
        from pipelines.deploy.dag_builder import run_in_process

        return run_in_process("train", [window["start_date"], window["end_date"]], None)["tokenizer_version"]

    @task
    def evaluate(version: str) -> str:
        """Gates on the held-out days, recorded on the registry version."""
        from pipelines.deploy.dag_builder import run_in_process

        run_in_process("evaluate", [], None, {"version": version})
        return version

    @task
    def promote(version: str) -> str:
        """Move the alias if every gate passed (fails the task, changing nothing, otherwise)."""
        from pipelines.deploy.dag_builder import run_in_process

        return run_in_process("promote", [], None, {"version": version})["promoted"]

    promote(evaluate(train(sample())))
