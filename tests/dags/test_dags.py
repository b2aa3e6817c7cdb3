"""Real Airflow 3: the DAG folder parses, and ``dag.test()`` runs the nightly DAG for two dates."""
from __future__ import annotations

import os
import shutil

import pytest
import yaml
from pyspark.sql import functions as F

from pipelines import tables
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    from pipelines.airflow_runner import prepare_airflow_home

    return prepare_airflow_home(tmp_path_factory.mktemp("airflow"))


def test_dag_folder_imports_without_errors(airflow_home):
    from pipelines.airflow_runner import load_dag

    dag = load_dag("u2qt_daily")
    assert [t.task_id for t in dag.topological_sort()] == ["init_tables", "stage", "quality_gates", "publish"]
    # dates may run side by side; only their publish steps are serialised (one-slot pool)
    assert dag.max_active_runs > 1
    assert dag.get_task("publish").pool == "u2qt_publish"
    from airflow.models.pool import Pool

    assert Pool.get_pool("u2qt_publish").slots == 1


def test_maintenance_dag_is_one_call(airflow_home):
    from pipelines.airflow_runner import load_dag

    dag = load_dag("u2qt_maintenance")
    assert [t.task_id for t in dag.topological_sort()] == ["maintain"]
    assert dag.max_active_runs == 1


@pytest.mark.slow
def test_dag_test_over_two_consecutive_dates(airflow_home, spark, trained_lake, tmp_path, monkeypatch, world_dates):
    from pipelines.airflow_runner import run_dag_for_date

    shutil.copytree(trained_lake["root"], tmp_path, dirs_exist_ok=True)
    settings = make_settings(tmp_path / "lake", tmp_path / "model")
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    monkeypatch.setenv("U2QT_PIPELINE_CONFIG", str(config))

    for event_date in world_dates:
        assert run_dag_for_date("u2qt_daily", event_date).endswith("success")

    day = tables.read_table(spark, settings, "user_day_tokens")
    assert sorted(str(r["event_date"]) for r in day.select("event_date").distinct().collect()) == world_dates
    history = tables.read_table(spark, settings, "user_token_history")
    assert history.where(F.col("n_days") == 2).count() > 0
    steps = tables.read_table(spark, settings, "run_metrics").where("status = 'ok'")
    assert steps.select("event_date", "step").distinct().count() == 3 * len(world_dates)  # stage, quality, publish
    # the run id recorded is Airflow's
    assert day.where(~F.col("run_id").contains("__")).count() == 0
    os.environ.pop("U2QT_PIPELINE_CONFIG", None)
