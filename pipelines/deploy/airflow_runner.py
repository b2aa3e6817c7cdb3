"""Run this project's Airflow DAGs in-process (``dag.test``) against a local SQLite metadata DB.

Used by ``u2qt demo`` / ``u2qt backfill --via-airflow`` and the tests. Airflow reads its config
when first imported, so :func:`prepare_airflow_home` must run before anything imports airflow.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from pipelines.config.config_loading import REPO_ROOT
from u2qt_core.errors import U2QTError
from pipelines.errors import DagRunFailed

log = logging.getLogger(__name__)

DAGS_FOLDER = REPO_ROOT / "dags"


def prepare_airflow_home(home: str | Path) -> Path:
    """Point Airflow at ``home`` (SQLite DB, no examples, this repo's dags/) and migrate the DB once."""
    home = Path(home).expanduser().absolute()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    os.environ.update(env)
    marker = home / ".migrated"
    if not marker.exists():
        log.info("airflow: migrating the metadata DB in %s", home)
        proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env={**os.environ, **env},
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise U2QTError(f"`airflow db migrate` failed in {home}:\n{proc.stderr[-2000:]}")
        marker.write_text("ok\n")
    ensure_publish_pool()
    return home


def ensure_publish_pool() -> None:
    """The one-slot pool that serialises ``u2qt_daily.publish`` across parallel DAG runs."""
    from airflow.models.pool import Pool

    from pipelines.lake.concurrency import PUBLISH_POOL

    Pool.create_or_update_pool(PUBLISH_POOL, slots=1, description="u2qt: one publish at a time",
                               include_deferred=False)


def load_dag(dag_id: str):
    """Parse ``dags/`` and return ``dag_id``; import errors are raised with the file named."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        details = "\n".join(f"{path}: {err}" for path, err in bag.import_errors.items())
        raise U2QTError(f"the DAG folder {DAGS_FOLDER} has import errors:\n{details}")
    if dag_id not in bag.dags:
        raise U2QTError(f"no DAG {dag_id!r} in {DAGS_FOLDER}; found {sorted(bag.dags)}")
    return bag.dags[dag_id]


def run_dag_for_date(dag_id: str, event_date: str) -> str:
    """``dag.test()`` for the data interval starting at ``event_date``; returns the run state.

    Raises :class:`DagRunFailed` naming the failed tasks when the run does not succeed.
    """
    dag = load_dag(dag_id)
    logical_date = datetime.fromisoformat(event_date).replace(tzinfo=timezone.utc)
    log.info("airflow: %s.test(logical_date=%s)", dag_id, logical_date.date())
    dag_run = dag.test(logical_date=logical_date)
    state = str(getattr(dag_run, "state", "unknown"))
    if not state.endswith("success"):
        failed = [ti.task_id for ti in dag_run.get_task_instances() if str(ti.state).endswith("failed")] if dag_run else []
        raise DagRunFailed(f"{dag_id} run for {event_date} ended {state}; failed tasks: {failed or '?'}")
    return state
