"""Airflow DAG ``u2qt_features``: ``user_features`` as of each night, once that night is published.

One run per daily data interval, like ``u2qt_daily``: ``wait_for_publish`` (an external-task
sensor on ``u2qt_daily.publish`` for the same logical date, in reschedule mode; the run is
skipped, not failed, when the night never publishes) -> ``features`` (:func:`pipelines.features.user_features.build_features`,
the idempotent step ``features DATE`` of :mod:`pipelines.deploy.submit`: it replaces the ``as_of``
partition). A DAG of its own, not a task of the nightly one, so that a slow or failed feature
build never holds up or fails the night's tokens, and so that it can be paused, given its own
pool or re-run over a range (``u2qt features START END``) without touching the tokens. One active
run at a time: each as-of date reads ``features.window_days`` days of tokens.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.sensors.external_task import ExternalTaskSensor
from airflow.timetables.interval import CronDataIntervalTimetable

from pipelines.deploy.dag_builder import dag_settings, step_task, u2qt_dag

settings = dag_settings()

with u2qt_dag(
    "u2qt_features",
    description="user_features (codebook vectors, TF-IDF bag of codes) as of each published night",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    settings=settings,
    max_active_runs=1,
    doc_md=__doc__,
):
    cfg = settings.airflow
    (ExternalTaskSensor(task_id="wait_for_publish", external_dag_id="u2qt_daily", external_task_id="publish",
                        mode="reschedule", poke_interval=cfg.sensor_poke_seconds,
                        timeout=timedelta(hours=cfg.sensor_timeout_hours + 6), soft_fail=True, retries=0)
     >> step_task("features", settings))
