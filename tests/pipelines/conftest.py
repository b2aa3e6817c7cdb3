"""Fixtures shared by the pipeline tests."""
from __future__ import annotations

import shutil
from datetime import timedelta

import pytest

from tests.conftest import make_settings


@pytest.fixture(scope="session")
def two_days(trained_lake, tmp_path_factory, spark):
    """Both world dates processed one by one, in order, on a private copy of the trained lake
    (read-only for the tests: the reference the other orders and the backfill are compared with)."""
    from pipelines.daily_job import run_day

    root = tmp_path_factory.mktemp("two-days")
    shutil.copytree(trained_lake["root"], root, dirs_exist_ok=True)
    settings = make_settings(root / "lake", root / "model")
    world = trained_lake["world"]
    dates = [(world.start_date + timedelta(days=i)).isoformat() for i in range(world.n_days)]
    metrics = [run_day(spark, settings, d, run_id=f"test-{d}") for d in dates]
    return {"settings": settings, "dates": dates, "metrics": metrics}


@pytest.fixture
def published_lake(two_days, tmp_path):
    """A private copy of :func:`two_days` (both dates already published) for a test that writes."""
    root = tmp_path / "published"
    shutil.copytree(two_days["settings"].tables_root, root / "lake")
    return make_settings(root / "lake", two_days["settings"].model_dir)
