"""README "Deployment" step 3 for real: the Airflow 3 scheduler, DAG processor and API server as
separate processes (LocalExecutor, SQLite, as ``airflow standalone`` configures them) on a
private AIRFLOW_HOME and a private copy of the trained lake; the data engineer's commands
(``dags unpause``, ``dags trigger``, ``backfill create --max-active-runs 1``, ``dags list-runs``)
run as CLI subprocesses, and every task runs in a task process the executor starts, each with
its own local Spark JVM."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from pipelines.lake.lake import Lake
from tests.conftest import REPO_ROOT, TINY_DATA_SQL_CONF, make_settings
from tests.deploy.conftest import SHORT_JVM_OPTS, Service, clean_env, free_port, http_json, tail, wait_for

DAG_ID = "u2qt_daily"
DAILY = ["wait_for_raw_events", "init_tables", "stage", "quality_gates", "publish"]
# the unpaused run (no data) skips at the first poke past the timeout, counted from the start of
# its first task process (before its DAG parse), and each poke is a task process of its own: with
# a timeout of one poke interval that is the second poke (the first under load), with 20 s it was
# the second or third. Not a shorter poke: at 5 s the scheduler re-queued the rescheduled sensor
# before its first process had exited and failed it when that process reported (seen once, load 5).
SENSOR_POKE_S = 10
SENSOR_TIMEOUT_S = 10
# bounds, not expectations: a date's run takes ~2 min on a quiet 2-core machine, 4x that under load
RUN_TIMEOUT_S = 900


def task_profile(path: Path) -> str:
    """conf/spark/local.yaml, smaller: every task process starts its own JVM on 2 busy cores (with
    the short-JVM flags), and one core means one Python worker, so stage loads the encoder once,
    not twice."""
    profile = yaml.safe_load((REPO_ROOT / "conf" / "spark" / "local.yaml").read_text())
    profile["master"] = "local[1]"
    profile["conf"].update({"spark.driver.memory": "1g", "spark.sql.shuffle.partitions": "2",
                            "spark.default.parallelism": "2", "spark.driver.extraJavaOptions": SHORT_JVM_OPTS,
                            **TINY_DATA_SQL_CONF})
    path.write_text(yaml.safe_dump(profile))
    return str(path)


def cli_json(stdout: str):
    """The JSON line of an ``airflow ... -o json`` output (the CLI logs warnings to stdout too)."""
    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith(("[", "{"))))


class Airflow:
    """The running services plus the CLI, the REST API and the logs of one AIRFLOW_HOME."""

    def __init__(self, home: Path, env: dict[str, str], api: str, settings, services: list[Service]):
        self.home, self.env, self.api, self.settings, self.services = home, env, api, settings, services

    def cli(self, *args: str, timeout_s: float = 300) -> str:
        proc = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, cwd=self.home,
                              capture_output=True, text=True, timeout=timeout_s)
        assert proc.returncode == 0, f"airflow {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-4000:]}\n{self.logs()}"
        return proc.stdout

    def get(self, path: str, **params):
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return http_json(f"{self.api}/api/v2/{path}{query}")

    def runs(self) -> list[dict]:
        return self.get(f"dags/{DAG_ID}/dagRuns", limit=100)["dag_runs"]

    def task_states(self, run_id: str) -> dict[str, str | None]:
        tis = self.get(f"dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}

    def logs(self, lines: int = 25) -> str:
        """The tails of every task log and of the services' logs (for assertion messages)."""
        parts = []
        for log in sorted((self.home / "logs").glob(f"dag_id={DAG_ID}/**/*.log")):
            parts.append(f"--- {log.relative_to(self.home / 'logs')}:\n{tail(log, lines)}")
        for service in self.services:
            parts.append(f"--- {service.name} ({'running' if service.alive() else 'exited'}):\n{tail(service.log, lines)}")
        return "\n".join(parts)

    def wait_until_done(self, logical_dates: list[str], timeout_s: float, run_type: str | None = None) -> list[dict]:
        """Poll the REST API until the runs of ``logical_dates`` (of ``run_type``) have all
        succeeded; fail at once if one fails, or after ``timeout_s``, with the logs' tails."""
        deadline = time.monotonic() + timeout_s
        latest: list[dict] = []
        while time.monotonic() < deadline:
            for service in self.services:
                if not service.alive():
                    raise AssertionError(f"{service.name} exited\n{self.logs()}")
            latest = [r for r in self.runs() if r["logical_date"] and r["logical_date"][:10] in logical_dates
                      and (run_type is None or r["run_type"] == run_type)]
            failed = [r for r in latest if r["state"] == "failed"]
            if failed:
                states = {r["dag_run_id"]: self.task_states(r["dag_run_id"]) for r in failed}
                raise AssertionError(f"runs failed: {states}\n{self.logs()}")
            if len(latest) == len(logical_dates) and all(r["state"] == "success" for r in latest):
                return latest
            time.sleep(3)
        summary = [(r["dag_run_id"], r["state"]) for r in latest]
        raise AssertionError(f"runs for {logical_dates} not done after {timeout_s:.0f} s: {summary}\n{self.logs()}")


@pytest.fixture(scope="module")
def airflow_services(trained_lake, tmp_path_factory):
    """Scheduler, DAG processor and API server on a temp AIRFLOW_HOME (README step 3): SQLite,
    LocalExecutor, no examples, the repo's dags/, the pool; the DAGs' config points at a private
    copy of the trained lake and starts at the world's first date. Stopped at teardown."""
    root = tmp_path_factory.mktemp("airflow-deploy")
    shutil.copytree(trained_lake["root"], root / "u2qt")
    world = trained_lake["world"]
    settings = make_settings(
        root / "u2qt" / "lake", root / "u2qt" / "model", spark_profile=task_profile(root / "tasks-spark.yaml"),
        airflow={"start_date": world.start_date.isoformat(),
                 # the run unpausing schedules for yesterday (no data) skips after one or two pokes
                 "sensor_poke_seconds": SENSOR_POKE_S, "sensor_timeout_hours": SENSOR_TIMEOUT_S / 3600,
                 # a failure surfaces at once (with its log) instead of after a 5-minute retry delay
                 "retries": 0})
    config = root / "u2qt.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    home = root / "airflow"
    home.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = clean_env(
        PYTHONPATH=str(REPO_ROOT),                      # README step 1, without installing
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        U2QT_PIPELINE_CONFIG=str(config),
        # what `airflow standalone` sets: LocalExecutor on the SQLite DB, the simple auth manager
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        # the API server on a free port; task processes reach its execution API there
        AIRFLOW__API__HOST="127.0.0.1", AIRFLOW__API__PORT=str(port), AIRFLOW__API__BASE_URL=api,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{api}/execution/",
        # cheap on two shared cores: two tasks at a time, no re-parse of the 5 DAG files while the
        # test runs (the default re-parses every 30 s; 600 s still re-parsed them once mid-test)
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="3600",
    )
    services: list[Service] = []
    airflow = Airflow(home, env, api, settings, services)
    airflow.cli("db", "migrate", timeout_s=600)
    airflow.cli("pools", "set", "u2qt_publish", "1", "u2qt: one publish at a time")
    try:
        for name, args in (("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"]),
                           ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"])):
            services.append(Service(name, [sys.executable, "-m", "airflow", *args], env, home / f"{name}.log", home))

        def healthy():
            health = http_json(f"{api}/api/v2/monitor/health")
            return all(health.get(part, {}).get("status") == "healthy" for part in ("scheduler", "dag_processor"))

        wait_for("the API server, scheduler and DAG processor to be healthy", healthy, 300, services, every_s=3)

        def parsed():
            errors = http_json(f"{api}/api/v2/importErrors")
            if errors["total_entries"]:
                raise AssertionError(f"DAG import errors: {errors['import_errors']}")
            return DAG_ID in {d["dag_id"] for d in http_json(f"{api}/api/v2/dags")["dags"]}

        wait_for(f"{DAG_ID} to be parsed", parsed, 300, services, every_s=3)
        yield airflow
    finally:
        for service in reversed(services):
            service.stop()


@pytest.mark.slow
def test_scheduler_runs_a_triggered_date_then_the_readme_backfill(airflow_services, spark):
    """The README's commands in order: unpause, trigger D1, then ``backfill create`` over D1..D2 with
    ``--max-active-runs 1`` and the default ``--reprocess-behavior none``: D1 (done) is left alone,
    only D2 runs; each date is written once, under its own Airflow run id."""
    airflow = airflow_services
    first = airflow.settings.airflow.start_date
    d1, d2 = first.isoformat(), (first + timedelta(days=1)).isoformat()

    airflow.cli("dags", "unpause", DAG_ID)
    airflow.cli("dags", "trigger", DAG_ID, "--logical-date", f"{d1}T00:00:00+00:00")
    (manual,) = airflow.wait_until_done([d1], timeout_s=RUN_TIMEOUT_S)
    assert manual["run_type"] == "manual"
    # retrain_if_due: skipped unless the night's drift first marked its tokenizer due (it did not)
    assert airflow.task_states(manual["dag_run_id"]) == {**{task: "success" for task in DAILY}, "retrain_if_due": "skipped"}

    # the README's backfill command: one run at a time; by default D1 (done) is not re-run
    airflow.cli("backfill", "create", "--dag-id", DAG_ID, "--from-date", d1, "--to-date", d2, "--max-active-runs", "1")
    (backfilled,) = airflow.wait_until_done([d2], timeout_s=RUN_TIMEOUT_S, run_type="backfill")
    run_ids = {d1: manual["dag_run_id"], d2: backfilled["dag_run_id"]}
    (backfill,) = wait_for("the scheduler to mark the backfill completed",
                           lambda: [b for b in airflow.get("backfills", dag_id=DAG_ID)["backfills"] if b["completed_at"]],
                           60, airflow.services, every_s=3)
    assert backfill["max_active_runs"] == 1 and backfill["reprocess_behavior"] == "none", backfill
    assert [r["run_type"] for r in airflow.runs() if (r["logical_date"] or "")[:10] == d1] == ["manual"]

    # the data engineer's view (README): list-runs as JSON
    listed = cli_json(airflow.cli("dags", "list-runs", DAG_ID, "-o", "json"))
    by_date = {r["logical_date"][:10]: r for r in listed}
    assert {by_date[d]["run_id"]: by_date[d]["state"] for d in (d1, d2)} == {run_ids[d1]: "success", run_ids[d2]: "success"}
    # the run unpausing scheduled (the latest interval, long after the data) waited in its sensor
    # beside the others, then skipped; none of its steps ran (the lake checks below: no rows for it)
    for run in (r for r in listed if r["logical_date"][:10] not in (d1, d2)):
        states = airflow.task_states(run["run_id"])
        assert all(states[t] in ("skipped", None, "upstream_failed") for t in DAILY[1:]), (run, states, airflow.logs())
        if run["state"] == "success":       # (under heavy load its sensor may fail an API call instead)
            assert set(states.values()) == {"skipped"}, (run, states)

    # what the tasks wrote: both dates, each recorded under its Airflow run id
    settings = airflow.settings
    day = Lake(spark, settings).read("user_day_tokens")
    written = {str(r["event_date"]): r["run_id"] for r in day.select("event_date", "run_id").distinct().collect()}
    assert written == run_ids, (written, run_ids)
    steps = Lake(spark, settings).read("run_metrics").where("status = 'ok'")
    recorded = {(str(r["event_date"]), r["run_id"]) for r in steps.select("event_date", "run_id").distinct().collect()}
    assert recorded == {(d, run_ids[d]) for d in (d1, d2)}, recorded
    # each date staged, gated and published once; the tokenizer resolved once per run id
    counts = {(str(r["event_date"]), r["step"]): r["count"] for r in steps.where("step != 'drift'")
              .groupBy("event_date", "step").count().collect()}
    assert counts == {(d, s): 1 for d in (d1, d2) for s in ("resolve", "stage", "quality", "publish")}, counts
