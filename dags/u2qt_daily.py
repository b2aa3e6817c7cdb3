"""Airflow DAG ``u2qt_daily``: tokenize one day of user behaviour into Delta tables.

One run per daily data interval; the run for interval [D, D+1) tokenizes date D once that day
is over: ``wait_for_raw_events`` (the day's ``raw_events`` partition; the run is skipped, not
failed, after ``airflow.sensor_timeout_hours``) -> ``init_tables`` -> ``stage`` ->
``quality_gates`` -> ``publish``, the idempotent steps of :mod:`pipelines.deploy.submit`. Each reads
what the previous one wrote to Delta, so any task can be retried or re-run alone; a failed gate
fails at once (no retries) and stops the run before anything is published. The DAG
``u2qt_features`` waits for this run's ``publish`` and builds ``user_features`` as of the date.

Everything deployment-specific comes from the ``airflow:`` block of ``conf/pipeline.yaml`` (or
the file named by ``U2QT_PIPELINE_CONFIG``), see :mod:`pipelines.deploy.dag_builder`: ``mode``
(``in_process`` in the worker, or ``spark_submit`` through the ``spark_default`` connection),
``start_date`` / ``catchup``, retries, the alert hook, ``max_active_runs``. Backfills:
``airflow backfill create --dag-id u2qt_daily --from-date ... --to-date ... --max-active-runs 1``
(its own limit, the DAG's is not applied) or ``u2qt backfill``; ``publish`` runs in the one-slot
pool ``u2qt_publish`` (``airflow pools set u2qt_publish 1 "u2qt publish"``), so dates that do
run side by side still publish one at a time.

``retrain_if_due`` runs beside ``publish`` once the gates pass: when this night's drift is the
first to mark the promoted tokenizer due for retraining (:mod:`pipelines.night.drift`), it emits
the Asset ``u2qt_tokenizer_retrain_due`` that ``u2qt_retrain`` is scheduled on; otherwise it is
skipped (no event). Only the first marking night emits, so a retraining whose version fails its
gates is not retried every night (re-trigger ``u2qt_retrain`` by hand).
"""
from __future__ import annotations

from airflow.timetables.interval import CronDataIntervalTimetable

from pipelines.lake.concurrency import PUBLISH_POOL
from pipelines.deploy.dag_builder import dag_settings, raw_events_sensor, retrain_if_due_task, step_task, u2qt_dag

settings = dag_settings()

with u2qt_dag(
    "u2qt_daily",
    description="Tokenize the day's active users into user_day_tokens / user_token_history / user_tokens",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    settings=settings,
    doc_md=__doc__,
):
    gates = step_task("quality", settings, task_id="quality_gates", retries=0)
    (raw_events_sensor(settings)
     >> step_task("init", settings, task_id="init_tables", dated=False)
     >> step_task("stage", settings)
     >> gates
     >> step_task("publish", settings, pool=PUBLISH_POOL))
    gates >> retrain_if_due_task()
