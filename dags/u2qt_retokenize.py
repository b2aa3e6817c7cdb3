"""Airflow DAG ``u2qt_retokenize``: a new table generation tokenized with one tokenizer version.

Manual only; params ``version`` (``u2qt-...``, registered), ``start`` and ``end`` (dates). One
task, one call (:func:`pipelines.retokenize.retokenize`): the dates are tokenized as one
backfill job into the generation of that version, checked complete, and the pointer switched
in one Delta commit, so views and catalog move together; the old generation stays readable.
Trigger: ``airflow dags trigger u2qt_retokenize -c '{"version": "u2qt-...", "start":
"2026-01-05", "end": "2026-01-07"}'``. Configuration as for ``u2qt_daily``.
"""
from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag, get_current_context, task


@dag(
    dag_id="u2qt_retokenize",
    description="Re-tokenize a date range with a tokenizer version into a new table generation and switch to it",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "version": Param("", type="string", description="tokenizer version (u2qt-...)"),
        "start": Param("", type="string", description="first date, YYYY-MM-DD"),
        "end": Param("", type="string", description="last date, YYYY-MM-DD"),
    },
    tags=["u2qt"],
)
def u2qt_retokenize():
    @task
    def retokenize() -> dict:
        """Backfill the range with the version into its generation, then switch atomically."""
        from pipelines.retokenize import retokenize as run_retokenize
        from pipelines.settings import load_settings
        from pipelines.spark_session import get_spark

        params = get_current_context()["params"]
        settings = load_settings(os.environ.get("U2QT_PIPELINE_CONFIG"))
        spark = get_spark(settings.spark_profile, app_name="u2qt_retokenize")
        return run_retokenize(spark, settings, params["version"], params["start"], params["end"])

    retokenize()


u2qt_retokenize()
