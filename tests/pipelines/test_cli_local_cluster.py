"""The CLI in a separate process: a bad date is reported in one line. (A date run with executors in
separate JVMs is tests/deploy/test_spark_standalone.py: spark-submit on a standalone cluster.)"""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_cli_reports_a_bad_date_clearly(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "backfill", "2026-01-05", "2026-01-01"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "before start date" in proc.stderr
