"""Airflow DAG ``u2qt_retokenize``: a new table generation tokenized with one tokenizer version.

Manual only; params ``version`` (``u2qt-...``, registered), ``start`` and ``end`` (dates). One
task, one call (:func:`pipelines.tokenizer.retokenize.retokenize`): the dates are tokenized as one
backfill job into the generation of that version, checked complete, and the pointer switched
in one Delta commit, so views and catalog move together; the old generation stays readable.
Trigger: ``airflow dags trigger u2qt_retokenize -c '{"version": "u2qt-...", "start":
"2026-01-05", "end": "2026-01-07"}'``. Configuration as for ``u2qt_daily``.
"""
from __future__ import annotations


from airflow.sdk import Param, get_current_context, task

from pipelines.deploy.dag_builder import dag_settings, u2qt_dag


settings = dag_settings()

with u2qt_dag(
    "u2qt_retokenize",
    description="Re-tokenize a date range with a tokenizer version into a new table generation and switch to it",
    schedule=None, settings=settings, max_active_runs=1, catchup=False, retries=0, doc_md=__doc__,
) as retokenize_dag:
    retokenize_dag.params.update({
        "version": Param("", type="string", description="tokenizer version (u2qt-...)"),
        "start": Param("", type="string", description="first date, YYYY-MM-DD"),
        "end": Param("", type="string", description="last date, YYYY-MM-DD"),
    })

    @task
    def retokenize() -> dict:
        """Backfill the range with the version into its generation, then switch atomically."""
        from pipelines.deploy.dag_builder import run_in_process

        params = get_current_context()["params"]
        return run_in_process("retokenize", [params["start"], params["end"]], None, {"version": params["version"]})

    retokenize()
