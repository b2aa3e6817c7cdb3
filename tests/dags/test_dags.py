"""Real Airflow 3: the DAG folder parses in both modes (``in_process``, ``spark_submit``) with the
deployment settings of the ``airflow:`` config block; ``dag.test()`` skips a date without input,
runs the nightly DAG for two dates, and a failed quality gate fails at once and alerts. Run ids:
every id Airflow makes is accepted and recognised as Airflow's, checked against Airflow's own
``DagRunType`` and ``DagRun.generate_run_id`` (not a copy of its format), and the pipeline's own
run ids are told apart from them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from pipelines.lake.views import read_view
from pipelines.night.day_run import AIRFLOW_RUN_TYPES, check_run_id, default_run_id, run_origin
from pipelines.lake.lake import Lake
from tests.conftest import make_settings
from u2qt_core.errors import InputError

DAILY = ["wait_for_raw_events", "init_tables", "stage", "quality_gates", "publish"]


def daily_chain(dag) -> list[str]:
    """The night's chain of ``u2qt_daily`` (its tasks but ``retrain_if_due``, which runs beside ``publish``)."""
    return [t.task_id for t in dag.topological_sort() if t.task_id != "retrain_if_due"]


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    from pipelines.deploy.airflow_runner import prepare_airflow_home

    return prepare_airflow_home(tmp_path_factory.mktemp("airflow"))


def write_config(path, settings, **airflow) -> str:
    """``settings`` as a YAML file with ``airflow:`` keys overridden; returns its path."""
    data = settings.model_dump(mode="json")
    data["airflow"].update(airflow)
    path.write_text(yaml.safe_dump(data))
    return str(path)


def parse(dag_id: str):
    from pipelines.deploy.airflow_runner import load_dag

    return load_dag(dag_id)


def test_in_process_dags_follow_the_config(airflow_home, monkeypatch, tmp_path):
    from airflow.models.pool import Pool
    from airflow.providers.standard.operators.python import PythonOperator

    from pipelines.runtime.alerts import log_failure

    settings = make_settings(tmp_path / "lake", tmp_path / "model")
    monkeypatch.setenv("U2QT_PIPELINE_CONFIG", write_config(tmp_path / "p.yaml", settings, start_date="2026-01-03"))
    dag = parse("u2qt_daily")
    assert daily_chain(dag) == DAILY
    assert str(dag.start_date.date()) == "2026-01-03" and dag.catchup is False
    assert dag.max_active_runs == 2       # today's run in its sensor + one more; backfills: --max-active-runs 1
    steps = [dag.get_task(t) for t in DAILY[1:]]
    assert all(isinstance(t, PythonOperator) for t in steps)
    assert {t.task_id: t.retries for t in steps} == {"init_tables": 2, "stage": 2, "quality_gates": 0, "publish": 2}
    assert dag.get_task("stage").op_kwargs == {"step": "stage", "dates": ["{{ ds }}"], "run_id": "{{ run_id }}"}
    assert dag.get_task("init_tables").op_kwargs["dates"] == []
    assert dag.get_task("publish").pool == "u2qt_publish" and Pool.get_pool("u2qt_publish").slots == 1
    assert all(t.on_failure_callback in (log_failure, [log_failure]) for t in steps)
    sensor = dag.get_task("wait_for_raw_events")
    assert (sensor.mode, sensor.soft_fail, sensor.retries) == ("reschedule", True, 0)
    assert sensor.timeout == timedelta(hours=18).total_seconds() and sensor.poke_interval == 300

    maintenance = parse("u2qt_maintenance")
    assert [t.task_id for t in maintenance.topological_sort()] == ["maintain"]
    assert maintenance.max_active_runs == 1 and maintenance.get_task("maintain").retries == 1
    assert maintenance.get_task("maintain").op_kwargs["step"] == "maintain"


def test_spark_submit_mode_submits_each_step(airflow_home, monkeypatch, tmp_path):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from tests.dags.alerts import record

    settings = make_settings(tmp_path / "lake", tmp_path / "model")
    config = write_config(tmp_path / "p.yaml", settings, mode="spark_submit", spark_conn_id="spark_test",
                          alert_callback="tests.dags.alerts:record")
    monkeypatch.setenv("U2QT_PIPELINE_CONFIG", config)
    dag = parse("u2qt_daily")
    assert daily_chain(dag) == DAILY
    stage = dag.get_task("stage")
    assert isinstance(stage, SparkSubmitOperator) and stage._conn_id == "spark_test"
    assert stage.application.endswith("pipelines/deploy/submit.py")
    assert stage.application_args == ["stage", "{{ ds }}", "--run-id", "{{ run_id }}", "--config", config]
    assert dag.get_task("init_tables").application_args[:2] == ["init", "--run-id"]
    assert "delta-spark_" in stage.jars and stage.py_files.endswith(".zip")
    assert stage.conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert stage.env_vars == {"U2QT_PIPELINE_CONFIG": config}
    assert dag.get_task("quality_gates").retries == 0 and dag.get_task("publish").pool == "u2qt_publish"
    assert stage.on_failure_callback in (record, [record])
    assert parse("u2qt_maintenance").get_task("maintain").application_args[0] == "maintain"


def test_a_bad_alert_hook_fails_the_parse_naming_the_key(airflow_home, monkeypatch, tmp_path):
    from u2qt_core.errors import U2QTError

    settings = make_settings(tmp_path / "lake", tmp_path / "model")
    monkeypatch.setenv("U2QT_PIPELINE_CONFIG", write_config(tmp_path / "p.yaml", settings, alert_callback="nope.mod:fn"))
    with pytest.raises(U2QTError, match=r"airflow.alert_callback: cannot import 'nope.mod:fn'"):
        parse("u2qt_daily")


def test_a_date_without_raw_events_is_skipped_not_failed(airflow_home, monkeypatch, tmp_path):
    from pipelines.deploy.airflow_runner import load_dag
    from datetime import datetime, timezone

    settings = make_settings(tmp_path / "lake", tmp_path / "model")
    monkeypatch.setenv("U2QT_PIPELINE_CONFIG", write_config(
        tmp_path / "p.yaml", settings, sensor_poke_seconds=1, sensor_timeout_hours=2 / 3600))
    run = load_dag("u2qt_daily").test(logical_date=datetime(2030, 1, 1, tzinfo=timezone.utc))
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {task: "skipped" for task in [*DAILY, "retrain_if_due"]}, states


def test_lifecycle_dags_parse(airflow_home):
    from pipelines.deploy.airflow_runner import load_dag

    retrain = load_dag("u2qt_retrain")
    assert [t.task_id for t in retrain.topological_sort()] == ["sample", "train", "evaluate", "promote"]
    assert retrain.max_active_runs == 1
    # the night's drift triggers the retraining: u2qt_daily emits the Asset u2qt_retrain is scheduled on
    from pipelines.deploy.dag_builder import RETRAIN_DUE_ASSET

    assert [a.name for a in retrain.timetable.asset_condition.objects] == [RETRAIN_DUE_ASSET]
    watch = load_dag("u2qt_daily").get_task("retrain_if_due")
    assert [o.name for o in watch.outlets] == [RETRAIN_DUE_ASSET] and watch.upstream_task_ids == {"quality_gates"}
    retokenize = load_dag("u2qt_retokenize")
    assert [t.task_id for t in retokenize.topological_sort()] == ["retokenize"]
    assert set(retokenize.params) == {"version", "start", "end"}
    features = load_dag("u2qt_features")
    assert [t.task_id for t in features.topological_sort()] == ["wait_for_publish", "features"]
    sensor = features.get_task("wait_for_publish")
    assert (sensor.external_dag_id, sensor.external_task_id, sensor.mode) == ("u2qt_daily", "publish", "reschedule")
    assert features.get_task("features").op_kwargs["step"] == "features" and features.max_active_runs == 1


@pytest.mark.slow
def test_dag_test_a_night_then_a_failed_gate(airflow_home, spark, trained_lake, tmp_path, monkeypatch,
                                             world_dates):
    """A night through the whole DAG; then a night whose gate fails: no retry, the alert hook runs
    once, nothing is published. Also: the sensor's Delta-log replay reads a checkpoint. (Several
    dates in a row are the pipeline tests' job; one night here keeps the suite's time down.)"""
    from pipelines.deploy.airflow_runner import DagRunFailed, run_dag_for_date
    from pipelines.deploy.dag_builder import live_partitions

    shutil.copytree(trained_lake["root"], tmp_path, dirs_exist_ok=True)
    settings = make_settings(tmp_path / "lake", tmp_path / "model")
    monkeypatch.setenv("U2QT_PIPELINE_CONFIG", write_config(tmp_path / "pipeline.yaml", settings))

    night = world_dates[0]
    assert run_dag_for_date("u2qt_daily", night).endswith("success")

    day = Lake(spark, settings).read("user_day_tokens")
    assert [str(r["event_date"]) for r in day.select("event_date").distinct().collect()] == [night]
    history = read_view(Lake(spark, settings), "user_token_history")
    assert history.count() == day.count()
    steps = Lake(spark, settings).read("run_metrics").where("status = 'ok'")
    # resolve (the tokenizer, once per run, by its first dated step), stage, quality (and its drift
    # check), publish
    assert sorted(r["step"] for r in steps.select("step").collect()) == ["drift", "publish", "quality", "resolve", "stage"]
    # the run id recorded is Airflow's (by Airflow's run types), never one the pipeline made itself
    recorded = {r["run_id"] for r in day.select("run_id").distinct().collect()}
    assert recorded and {run_origin(run_id) for run_id in recorded} == {"airflow"}

    raw = Lake(spark, settings).path("raw_events")
    spark.sql(f"ALTER TABLE delta.`{raw}` SET TBLPROPERTIES ('delta.checkpointInterval' = '1')")
    assert live_partitions(Path(raw), "event_date") >= set(world_dates)
    assert list((Path(raw) / "_delta_log").glob("*.checkpoint.parquet"))

    alerts = tmp_path / "alerts.jsonl"
    monkeypatch.setenv("U2QT_TEST_ALERTS", str(alerts))
    monkeypatch.setenv("U2QT_PIPELINE_CONFIG", write_config(
        tmp_path / "failing.yaml", make_settings(tmp_path / "lake", tmp_path / "model",
                                                 quality={"min_active_users": 10**9}),
        alert_callback="tests.dags.alerts:record"))
    published = day.count()
    # publish and retrain_if_due (after the gates) end upstream_failed
    with pytest.raises(DagRunFailed, match=r"failed tasks: \['publish', 'quality_gates', 'retrain_if_due'\]"):
        run_dag_for_date("u2qt_daily", world_dates[0])
    sent = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert [(a["task_id"], a["try_number"], a["ds"]) for a in sent] == [("quality_gates", 1, world_dates[0])]
    assert "min_active_users 1000000000" in sent[0]["exception"]
    assert Lake(spark, settings).read("user_day_tokens").count() == published


def _airflow_run_ids() -> list[tuple[object, str]]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    logical = datetime(2026, 1, 5, tzinfo=timezone.utc)
    after = datetime(2026, 1, 6, 0, 5, 17, 123456, tzinfo=timezone.utc)
    ids = []
    for run_type in DagRunType:
        ids.append((run_type, DagRun.generate_run_id(run_type=run_type, logical_date=logical, run_after=after)))
        ids.append((run_type, DagRun.generate_run_id(run_type=run_type, logical_date=None, run_after=after)))
    return ids


def test_our_list_of_run_types_is_airflows(airflow_home):
    from airflow.utils.types import DagRunType

    assert set(AIRFLOW_RUN_TYPES) == {t.value for t in DagRunType}


def test_airflow_run_ids_are_accepted_and_recognised(airflow_home):
    from airflow.utils.types import DagRunType

    ids = _airflow_run_ids()
    assert any("+00:00" in run_id for _, run_id in ids)       # Airflow's ids carry ':' and '+'
    for run_type, run_id in ids:
        assert check_run_id(run_id) == run_id
        assert run_origin(run_id) == "airflow", run_id
        assert DagRunType.from_run_id(run_id) == run_type


def test_pipeline_run_ids_are_told_apart_from_airflows(airflow_home):
    from airflow.utils.types import DagRunType

    ours = default_run_id("2026-01-05")
    assert check_run_id(ours) == ours and run_origin(ours) == "u2qt"
    assert not any(ours.startswith(f"{t.value}__") for t in DagRunType)   # Airflow would call it manual by default
    assert run_origin("nightly-2026-01-05") == "other"
    for bad in ("", "   ", "x" * 251, "manual__2026\n01"):
        with pytest.raises(InputError, match="run id"):
            check_run_id(bad)
