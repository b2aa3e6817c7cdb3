"""The CLI in a separate process on ``local-cluster[2,1,1024]``: two executor JVMs, so the pandas
UDF and its per-worker model cache really cross process boundaries."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml
from pyspark.sql import functions as F

from pipelines import tables
from tests.conftest import REPO_ROOT, make_settings


@pytest.mark.slow
def test_run_day_on_local_cluster_matches_local_mode(spark, trained_lake, tmp_path, world_dates):
    shutil.copytree(trained_lake["root"], tmp_path, dirs_exist_ok=True)
    settings = make_settings(tmp_path / "lake", tmp_path / "model")
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run-day", world_dates[0], "--config", str(config),
         "--set", "spark_profile=local-cluster"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "local-cluster" in proc.stderr

    # the same date in this process (local mode) on another copy gives the same codes
    other = tmp_path / "local"
    shutil.copytree(trained_lake["root"], other)
    local_settings = make_settings(other / "lake", other / "model")
    from pipelines.daily_job import run_day

    run_day(spark, local_settings, world_dates[0])
    cluster_rows = tables.read_table(spark, settings, "user_day_tokens").select("user_id", "source", "codes")
    local_rows = tables.read_table(spark, local_settings, "user_day_tokens").select("user_id", "source", "codes")
    assert cluster_rows.count() == local_rows.count() > 0
    assert cluster_rows.exceptAll(local_rows).count() == 0


def test_cli_reports_a_bad_date_clearly(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "backfill", "2026-01-05", "2026-01-01"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "before start date" in proc.stderr
