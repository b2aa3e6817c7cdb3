"""How every u2qt DAG is built from the ``airflow:`` block of ``conf/pipeline.yaml``.

One helper for all DAG files (``dags/u2qt_daily.py``, ``dags/u2qt_maintenance.py`` ...):

* :func:`u2qt_dag` - the DAG: ``start_date`` and ``catchup`` from config (unpausing never
  schedules a date before the first one with data), ``retries`` / ``retry_delay`` and the failure
  callback (:func:`pipelines.runtime.alerts.log_failure`, or ``airflow.alert_callback``) on every task, ``max_active_runs``;
* :func:`step_task` - one step of the registry :mod:`pipelines.steps` (``stage``, ``quality``, ``publish``,
  ``maintain`` ...): with ``airflow.mode: in_process`` a Python task that runs the step in the
  Airflow worker (local, demo, tests); with ``spark_submit`` a ``SparkSubmitOperator`` against
  ``airflow.spark_conn_id`` that submits ``pipelines/deploy/submit.py`` with the Delta jars, the
  ``--py-files`` zip and the profile's conf (the command of ``u2qt submit-args``). Both run the
  same :func:`pipelines.steps.launch`, with Airflow's run id and the run's logical date;
* :func:`raw_events_sensor` - waits (rescheduling, holding no worker slot) until the day's
  ``raw_events`` partition holds a file in the Delta log, and skips the run after
  ``airflow.sensor_timeout_hours`` instead of tokenizing an empty day.

The config the DAGs read is ``$U2QT_PIPELINE_CONFIG`` (else the packaged default); the tasks get
the same location, so parser, worker and spark-submit driver agree.
"""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pipelines.config.settings import PipelineSettings, load_settings
from pipelines.runtime.alerts import resolve_callback

log = logging.getLogger(__name__)

CONFIG_ENV = "U2QT_PIPELINE_CONFIG"
DAY = "{{ ds }}"              # the run's logical date = the day it tokenizes (data_interval_start)
RUN_ID = "{{ run_id }}"


def config_location() -> str | None:
    """The pipeline config the DAGs and their tasks use (None: the packaged conf/pipeline.yaml)."""
    return os.environ.get(CONFIG_ENV) or None


def dag_settings() -> PipelineSettings:
    return load_settings(config_location())


# ---- the retrain trigger --------------------------------------------------------------------------

#: the Asset a night emits when its drift first marks the promoted tokenizer due for retraining
RETRAIN_DUE_ASSET = "u2qt_tokenizer_retrain_due"


def retrain_due_asset():
    """The Airflow Asset ``u2qt_daily``'s ``retrain_if_due`` task emits and ``u2qt_retrain`` is
    scheduled on (:data:`RETRAIN_DUE_ASSET`)."""
    from airflow.sdk import Asset

    return Asset(name=RETRAIN_DUE_ASSET, uri=f"u2qt://tokenizer/{RETRAIN_DUE_ASSET}")


def retrain_if_due_task():
    """``retrain_if_due``: after the quality gates, emit :func:`retrain_due_asset` when this night
    is the first to mark its tokenizer due for retraining (step ``retrain-due``, read in the worker
    from ``run_metrics`` in both modes); skipped otherwise, and a skipped task emits no event."""
    from airflow.sdk import task

    @task(task_id="retrain_if_due", outlets=[retrain_due_asset()], retries=0)
    def retrain_if_due(ds=None, run_id=None) -> dict:
        from airflow.exceptions import AirflowSkipException

        result = run_in_process("retrain-due", [ds], run_id)
        if not (result["retrain_due"] and result["first"]):
            raise AirflowSkipException(f"no new retraining mark: {result}")
        log.warning("night %s marked tokenizer %s due for retraining: emitting %s", ds, result["tokenizer_version"],
                    RETRAIN_DUE_ASSET)
        return result

    return retrain_if_due()


# ---- the DAG -------------------------------------------------------------------------------------

def u2qt_dag(dag_id: str, *, description: str, schedule: Any, settings: PipelineSettings,
             max_active_runs: int | None = None, catchup: bool | None = None, retries: int | None = None,
             retry_delay: timedelta | None = None, doc_md: str | None = None):
    """A DAG with the deployment's start date, catchup, retries and alert hook (see module doc)."""
    from airflow.sdk import DAG

    cfg = settings.airflow
    start = datetime.combine(cfg.start_date, datetime.min.time(), tzinfo=timezone.utc)
    return DAG(
        dag_id=dag_id, description=description, schedule=schedule, start_date=start,
        catchup=cfg.catchup if catchup is None else catchup,
        max_active_runs=cfg.max_active_runs if max_active_runs is None else max_active_runs,
        default_args={
            "retries": cfg.retries if retries is None else retries,
            "retry_delay": retry_delay or timedelta(minutes=cfg.retry_delay_minutes),
            "on_failure_callback": resolve_callback(cfg.alert_callback),
        },
        tags=["u2qt"], doc_md=doc_md,
    )


# ---- steps ---------------------------------------------------------------------------------------

def run_in_process(step: str, dates: list[str], run_id: str | None, args: dict[str, str] | None = None) -> dict:
    """The step in this process (the ``in_process`` task body): :func:`pipelines.steps.launch`,
    the same entry as spark-submit's."""
    from pipelines.steps import launch

    return launch(step, dag_settings(), list(dates), run_id, args)


def step_task(step: str, settings: PipelineSettings, *, task_id: str | None = None, dated: bool = True,
              args: dict[str, str] | None = None, **operator_args):
    """The operator that runs registered ``step`` (:mod:`pipelines.steps`) for the run's date
    (``dated=False``: no date argument), with the step's named ``args``."""
    from pipelines.steps import get

    get(step)   # an unknown step fails the DAG parse, naming it
    task_id = task_id or step
    dates = [DAY] if dated else []
    if settings.airflow.mode == "in_process":
        from airflow.providers.standard.operators.python import PythonOperator

        return PythonOperator(task_id=task_id, python_callable=run_in_process,
                              op_kwargs={"step": step, "dates": dates, "run_id": RUN_ID, **({"args": args} if args else {})},
                              **operator_args)
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from pipelines.runtime.spark_session import delta_jars, submit_conf
    from pipelines.deploy.submit import build_py_files_zip, submit_entry_point

    config = config_location()
    argv = [step, *dates, "--run-id", RUN_ID] + (["--config", config] if config else [])
    for key, value in (args or {}).items():
        argv += ["--arg", f"{key}={value}"]
    return SparkSubmitOperator(
        task_id=task_id, conn_id=settings.airflow.spark_conn_id, name=f"u2qt_{step}",
        application=str(submit_entry_point()), application_args=argv,
        py_files=settings.airflow.py_files or str(build_py_files_zip()),
        jars=",".join(str(j) for j in delta_jars()), conf=submit_conf(settings.spark_profile),
        env_vars={CONFIG_ENV: config} if config else None, **operator_args)


# ---- waiting for the day's input -----------------------------------------------------------------

def raw_partition_ready(event_date: str) -> bool:
    """True when the Delta log of ``raw_events`` has a live file in partition ``event_date``."""
    from pipelines.lake.lake import Lake

    ready = event_date in live_partitions(Path(Lake(None, dag_settings()).path("raw_events")), "event_date")
    log.info("raw_events partition event_date=%s %s", event_date, "is there" if ready else "not there yet")
    return ready


def live_partitions(table: Path, column: str) -> set[str]:
    """Values of ``column`` over the table's live files, replaying its ``_delta_log`` (the last
    checkpoint, read with pyarrow, then the JSON commits after it). Cheap: no Spark."""
    log_dir = table / "_delta_log"
    if not log_dir.is_dir():
        return set()
    live: dict[str, str | None] = {}
    after = -1
    last = log_dir / "_last_checkpoint"
    if last.exists():
        import pyarrow.parquet as pq

        after = json.loads(last.read_text())["version"]
        for part in sorted(log_dir.glob(f"{after:020d}.checkpoint*.parquet")):
            for add in pq.read_table(part, columns=["add"]).column("add").to_pylist():
                if add:
                    live[add["path"]] = dict(add["partitionValues"] or {}).get(column)
    for commit in sorted(log_dir.glob("*.json")):
        if int(commit.stem) <= after:
            continue
        for line in commit.read_text().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "add" in action:
                live[action["add"]["path"]] = (action["add"].get("partitionValues") or {}).get(column)
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return {value for value in live.values() if value is not None}


def raw_events_sensor(settings: PipelineSettings, task_id: str = "wait_for_raw_events"):
    """Reschedule-mode sensor on the day's ``raw_events`` partition; skips (soft_fail) on timeout."""
    from airflow.providers.standard.sensors.python import PythonSensor

    cfg = settings.airflow
    return PythonSensor(task_id=task_id, python_callable=raw_partition_ready, op_args=[DAY],
                        mode="reschedule", poke_interval=cfg.sensor_poke_seconds,
                        timeout=timedelta(hours=cfg.sensor_timeout_hours), soft_fail=True, retries=0)
