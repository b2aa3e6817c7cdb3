"""The persistent catalog seen from outside the pipeline: ``u2qt-submit catalog`` registers the
tables and the permanent views (the history view included) in the embedded metastore, then a
fresh ``spark-sql`` with only the written properties file (jars, the two Delta settings, the
metastore) lists them and reads the history view with the same rows as the pipeline's own
:func:`pipelines.lake.history.read_history` (base + uncovered days)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from pyspark.sql import functions as F

from pipelines.lake.history import compact_history, read_history
from pipelines.config.settings import HistoryConfig
from pipelines.lake.lake import Lake
from tests.conftest import REPO_ROOT

DIGEST = "count(*), sum(n_days), sum(size(tokens)), sum(hash(user_id, source, dates, tokens))"


def _env(tmp_path) -> dict:
    from pyspark.find_spark_home import _find_spark_home

    env = {k: v for k, v in os.environ.items() if k not in ("MASTER", "SPARK_MASTER")}
    return {**env, "PYTHONPATH": str(REPO_ROOT), "SPARK_HOME": _find_spark_home()}


def test_spark_sql_sees_tables_and_permanent_views(spark, published_lake, world_dates, tmp_path):
    from delta.tables import DeltaTable

    settings = published_lake.model_copy(update={"history": HistoryConfig(max_days=180, period_days=1)})
    assert compact_history(Lake(spark, settings))["compacted"] == world_dates
    # the newest date leaves the base again (as after a re-publish): the view reads it from user_day_tokens
    DeltaTable.forPath(spark, Lake(spark, settings).path("user_token_history_periods")).delete(
        f"period_start = DATE'{world_dates[-1]}'")
    history = read_history(Lake(spark, settings))
    expected = history.select(F.count("*"), F.sum("n_days"), F.sum(F.size("tokens")),
                              F.sum(F.hash("user_id", "source", "dates", "tokens"))).first()
    assert history.where(F.col("n_days") == len(world_dates)).count() > 0

    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    proc = subprocess.run([sys.executable, "-m", "pipelines.deploy.submit", "catalog", "--config", str(config),
                           "--master", "local[1]"], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    registered = json.loads(proc.stdout[proc.stdout.index("{"):])["registered"]
    assert {"u2qt.user_token_history", "u2qt.user_identity", "u2qt.user_day_token_strings",
            "u2qt.user_day_tokens", "u2qt.raw_events"} <= set(registered)

    properties = os.path.join(settings.tables_root, "_catalog", "spark.conf")
    spark_sql = os.path.join(os.path.dirname(sys.executable), "spark-sql")
    query = f"SHOW TABLES IN u2qt; SELECT {DIGEST} FROM u2qt.user_token_history;"
    proc = subprocess.run([spark_sql, "--properties-file", properties, "--master", "local[1]",
                           "--conf", "spark.sql.shuffle.partitions=2", "-S", "-e", query],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *shown, digest = proc.stdout.strip().splitlines()        # -S: one table name per line, then the row
    assert {name.split(".")[1] for name in registered} == set(shown)
    assert [int(v) for v in digest.split("\t")] == [int(v) for v in expected]
