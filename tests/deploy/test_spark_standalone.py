"""README "Deployment" steps 4-5 for real: one date through ``spark-submit`` on a Spark standalone
master and worker (executors in their own JVMs, their Python workers importing only the
``--py-files`` zip), the night as the one application ``u2qt submit-args run-day`` prints; the codes it publishes
are the ones local mode publishes for the same date."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from pipelines.lake.lake import Lake
from tests.conftest import REPO_ROOT, TINY_DATA_SQL_CONF, make_settings
from tests.deploy.conftest import SHORT_JVM_OPTS, clean_env, http_json, tail

# one application for the night: the registry's run-day step (stage, gates, publish in one driver),
# so the test starts one driver and one executor JVM instead of three of each; each step alone goes
# through the same registry entry point (tests/pipelines/test_steps.py)
STEPS = ("run-day",)
NIGHT_STEPS = ("stage", "quality", "publish")


def standalone_profile(path) -> str:
    """README step 5's profile: conf/spark/cluster-cpu.yaml with an executor this worker can hold
    (here smaller still: one executor of 1 core / 1 GiB, so one Python worker loads the encoder
    once; 2 shuffle partitions, no driver UI, the short-JVM flags and interpreted expressions)."""
    profile = yaml.safe_load((REPO_ROOT / "conf" / "spark" / "cluster-cpu.yaml").read_text())
    profile["conf"].update({"spark.executor.cores": "1", "spark.cores.max": "1", "spark.executor.memory": "1g",
                            "spark.driver.memory": "1g", "spark.sql.shuffle.partitions": "2",
                            "spark.default.parallelism": "2", "spark.ui.enabled": "false",
                            # Delta's state reconstruction: 2 tasks, not its default 50, per snapshot
                            "spark.databricks.delta.snapshotPartitions": "2",
                            "spark.driver.extraJavaOptions": SHORT_JVM_OPTS,
                            "spark.executor.extraJavaOptions": SHORT_JVM_OPTS, **TINY_DATA_SQL_CONF})
    path.write_text(yaml.safe_dump(profile))
    return str(path)


def step_metrics(stdout: str) -> dict:
    """The metrics JSON a step prints last (spark-submit merges the Python driver's stderr, its
    log lines, into stdout): from the last line ``{`` to the next ``}``."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    end = lines.index("}", start)
    return json.loads("\n".join(lines[start:end + 1]))


@pytest.mark.slow
def test_a_date_through_spark_submit_on_standalone_matches_local_mode(spark, trained_lake, two_days, spark_standalone,
                                                                      tmp_path):
    day = two_days["dates"][0]
    shutil.copytree(trained_lake["root"], tmp_path / "cluster")
    settings = make_settings(tmp_path / "cluster" / "lake", tmp_path / "cluster" / "model")
    config = tmp_path / "u2qt.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    profile = standalone_profile(tmp_path / "standalone.yaml")

    # `u2qt` from the checkout (PYTHONPATH, README step 1); the printed command runs without it:
    # driver and executors import the project from the --py-files zip only
    cli_env = clean_env(PYTHONPATH=str(REPO_ROOT))
    submit_env = spark_standalone["env"]
    for step in STEPS:
        args = subprocess.run(
            [sys.executable, "-m", "pipelines.cli.main", "--master", spark_standalone["master"], "submit-args", step, day,
             "--config", str(config), "--set", f"spark_profile={profile}", "--py-files-dir", str(tmp_path / "dist")],
            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300)
        assert args.returncode == 0, args.stderr[-3000:]
        command = args.stdout.strip()
        assert f"--master {spark_standalone['master']}" in command and "--py-files" in command
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=submit_env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (
            f"{step}: exit {proc.returncode}\n{proc.stderr[-5000:]}\n--- worker:\n"
            f"{tail(spark_standalone['root'] / 'worker.log')}")
        assert isinstance(step_metrics(proc.stdout), dict), proc.stdout[-3000:]

    # the three applications ran on this master, with executors from its worker
    done = {app["name"]: app for app in http_json(spark_standalone["ui"])["completedapps"]}
    for step in STEPS:
        assert done[f"u2qt_{step.replace('-', '_')}"]["state"] == "FINISHED", done
    executor_logs = list((spark_standalone["root"] / "work").glob("app-*/*/stderr"))
    assert len(executor_logs) >= len(STEPS)

    # the same date in local mode publishes the same codes (the session's two_days ran it in order)
    cluster_rows = Lake(spark, settings).read("user_day_tokens").select("user_id", "source", "event_date", "codes")
    local_rows = (Lake(spark, two_days["settings"]).read("user_day_tokens").where(f"event_date = '{day}'")
                  .select("user_id", "source", "event_date", "codes"))
    assert cluster_rows.count() == local_rows.count() > 0
    assert cluster_rows.exceptAll(local_rows).count() == 0
    steps = Lake(spark, settings).read("run_metrics").where(f"event_date = '{day}' AND status = 'ok'")
    assert {r["step"] for r in steps.select("step").collect()} >= set(NIGHT_STEPS)
