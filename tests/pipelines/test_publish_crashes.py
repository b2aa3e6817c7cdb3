"""Publish dies after each of its commits, then is retried both ways, on the collide world (issue 24).

A crash is :class:`pipelines.commit_points.SimulatedCrash` raised right after a commit: a
BaseException, so no handler of the pipeline records or cleans up anything, as after a SIGKILL.
From that state, two copies of the lake are healed:

* **step retry**: the publish step alone again, same run (what Airflow's task retry does);
* **whole date**: stage, gates and publish again (what clearing the DAG run does, same run id);
  for the backfill, the whole backfill again (new run ids, so run ids are left out of the check).

Both must leave every table as the uninterrupted publish from the same staged state left it.
The test also checks that the commit points it crashes at are every commit publish makes (the
Delta versions of all tables before and after an uninterrupted publish), so a commit added to
publish without a crash point fails here.
"""
from __future__ import annotations

import shutil

import pytest

from pipelines import commit_points, tables
from pipelines.backfill import backfill
from pipelines.daily_job import check_quality, publish, publish_dates, run_day, stage
from pipelines.day_run import DayRun, load_tokenizer_info
from pipelines.quality import check_quality_dates
from pipelines.stage import stage_dates
from tests.conftest import make_settings
from tests.pipelines.collide_world import D1, D2, assert_consistent, identity_rows, write_collide_world
from tests.pipelines.lake_state import delta_versions, lake_state

#: the commits a publish of the collide world makes (no compacted history period, so no uncover)
REACHED = [p for p in commit_points.PUBLISH_COMMITS if p != "user_day_tokens.uncover"]


def _copy(src, dest):
    shutil.copytree(src, dest)
    return make_settings(dest / "lake", dest / "model")


def _crash(point, action) -> None:
    with commit_points.crash_after(point), pytest.raises(commit_points.SimulatedCrash, match=point):
        action()


def _reference(spark, staged_root, tmp_path, publish_all) -> dict:
    """The uninterrupted publish from the staged state: its tables, and the commits it made."""
    settings = _copy(staged_root, tmp_path / "uninterrupted")
    before = delta_versions(spark, settings)
    publish_all(settings)
    after = delta_versions(spark, settings)
    committed = {name: after[name] - before.get(name, -1) for name in after if after[name] != before.get(name)}
    assert committed == {name: 1 for name in REACHED}, committed
    return {"state": lake_state(spark, settings), "loose": lake_state(spark, settings, with_run_ids=False),
            "identities": identity_rows(spark, settings)}


def test_a_date_survives_a_crash_after_every_commit_of_publish(spark, collided, trained_lake, tmp_path):
    staged_root = tmp_path / "staged"
    settings = write_collide_world(spark, trained_lake["root"], staged_root)
    run_day(spark, settings, D1, run_id=f"test-{D1}")
    tokenizer = load_tokenizer_info(settings)
    staged_run = DayRun(spark, settings, D2, f"test-{D2}", tokenizer)
    stage(staged_run)
    check_quality(staged_run)

    want = _reference(spark, staged_root, tmp_path, lambda s: publish(DayRun(spark, s, D2, f"test-{D2}", tokenizer)))
    assert want["identities"] == collided["after"][D2][0]

    for point in REACHED:
        crashed = _copy(staged_root, tmp_path / point / "step")
        _crash(point, lambda: publish(DayRun(spark, crashed, D2, f"test-{D2}", tokenizer)))
        whole = _copy(tmp_path / point / "step", tmp_path / point / "whole")

        publish(DayRun(spark, crashed, D2, f"test-{D2}", tokenizer))            # the task retry
        assert lake_state(spark, crashed) == want["state"], f"step retry after {point}"
        run_day(spark, whole, D2, run_id=f"test-{D2}")                            # the whole date again
        assert lake_state(spark, whole) == want["state"], f"whole-date re-run after {point}"
        assert_consistent(spark, whole)


def test_a_backfill_survives_a_crash_after_every_commit_of_its_publish(spark, collided, trained_lake, tmp_path):
    staged_root = tmp_path / "staged"
    settings = write_collide_world(spark, trained_lake["root"], staged_root)
    tokenizer = load_tokenizer_info(settings)

    def runs(s):
        return [DayRun(spark, s, d, f"bf__{d}__1", tokenizer) for d in (D1, D2)]

    tables.ensure_all(spark, settings, tokenizer.version)     # as `u2qt init-tables` does before a backfill
    stage_dates(runs(settings))
    check_quality_dates(runs(settings))
    want = _reference(spark, staged_root, tmp_path, lambda s: publish_dates(runs(s)))
    assert want["identities"] == collided["after"][D2][0]

    for point in REACHED:
        crashed = _copy(staged_root, tmp_path / point / "step")
        _crash(point, lambda: publish_dates(runs(crashed)))
        whole = _copy(tmp_path / point / "step", tmp_path / point / "whole")

        publish_dates(runs(crashed))
        assert lake_state(spark, crashed) == want["state"], f"publish retry after {point}"
        backfill(spark, whole, [D1, D2], run_prefix="again")
        assert lake_state(spark, whole, with_run_ids=False) == want["loose"], f"backfill re-run after {point}"
        assert_consistent(spark, whole)
