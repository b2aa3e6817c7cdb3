"""Fixtures shared by the pipeline tests (including the collide world run once, uninterrupted)."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import build_once, make_settings
from tests.pipelines.collide_world import D1, D2, assert_consistent, identity_rows, write_collide_world


@pytest.fixture
def published_lake(two_days, tmp_path):
    """A private copy of :func:`two_days` (both dates already published) for a test that writes."""
    root = tmp_path / "published"
    shutil.copytree(two_days["settings"].tables_root, root / "lake")
    return make_settings(root / "lake", two_days["settings"].model_dir)


@pytest.fixture(scope="session")
def collided(spark, trained_lake, tmp_path_factory):
    """The collide world run D1 then D2 without interruption (read-only: copy it with
    :func:`copy_lake`); ``after[date]`` = (identity rows, groups) right after that date.
    ``staged`` is a copy of the lake taken on the way, with D1 done and D2 staged and gated but
    not published (the state tests/pipelines/test_publish_crashes.py crashes publish from)."""
    def build(root):
        from pipelines.night.day_run import open_run
        from pipelines.night.publish import publish
        from pipelines.night.quality import check_quality
        from pipelines.night.stage import stage

        settings = write_collide_world(spark, trained_lake["root"], root / "run")
        after = {}
        for event_date in (D1, D2):
            run = open_run(spark, settings, event_date, f"test-{event_date}", None)   # run_day, step by step
            stage(run)
            check_quality(run)
            if event_date == D2:
                shutil.copytree(root / "run", root / "staged")
            publish(run)
            after[event_date] = (identity_rows(spark, settings), assert_consistent(spark, settings))
        return {"root": root / "run", "staged": root / "staged", "settings": settings, "after": after}

    return build_once(tmp_path_factory, "collide", build)


def copy_lake(collided: dict, dest) -> object:
    """A private copy of the collided lake (tables + tokenizer); returns its settings."""
    shutil.copytree(collided["root"], dest, dirs_exist_ok=True)
    return make_settings(dest / "lake", dest / "model")
