"""Publish dies after each of its commits, then is retried both ways, on the collide world (issue 24).

A crash is :class:`pipelines.night.commit_points.SimulatedCrash` raised right after a commit: a
BaseException, so no handler of the pipeline records or cleans up anything, as after a SIGKILL.
From that state, two copies of the lake are healed:

* **step retry**: the publish step alone again, same run (what Airflow's task retry does);
* **whole date**: stage, gates and publish again (what clearing the DAG run does, same run id).

Both must leave every table as the uninterrupted publish from the same staged state left it
(:mod:`tests.pipelines.crash_points` also checks that the crash points are every commit publish
makes). The batched backfill publish: tests/pipelines/test_backfill_crashes.py.
"""
from __future__ import annotations

from pipelines.night.daily_job import run_day
from pipelines.night.day_run import DayRun, load_tokenizer_info
from pipelines.night.publish import publish
from tests.conftest import make_settings
from tests.pipelines.collide_world import D2, assert_consistent
from tests.pipelines.crash_points import REACHED, copy_staged, crash_after, uninterrupted
from tests.pipelines.lake_state import lake_state


def test_a_date_survives_a_crash_after_every_commit_of_publish(spark, collided, tmp_path):
    # D1 run, D2 staged and gated (by run test-D2), not published: taken by the collided fixture on its way
    staged_root = collided["staged"]
    tokenizer = load_tokenizer_info(make_settings(staged_root / "lake", staged_root / "model"))

    want = uninterrupted(spark, staged_root, tmp_path, lambda s: publish(DayRun(spark, s, D2, f"test-{D2}", tokenizer)))
    assert want["identities"] == collided["after"][D2][0]

    for point in REACHED:
        crashed = copy_staged(staged_root, tmp_path / point / "step")
        crash_after(point, lambda: publish(DayRun(spark, crashed, D2, f"test-{D2}", tokenizer)))
        whole = copy_staged(tmp_path / point / "step", tmp_path / point / "whole")

        publish(DayRun(spark, crashed, D2, f"test-{D2}", tokenizer))            # the task retry
        assert lake_state(spark, crashed) == want["state"], f"step retry after {point}"
        run_day(spark, whole, D2, run_id=f"test-{D2}")                            # the whole date again
        assert lake_state(spark, whole) == want["state"], f"whole-date re-run after {point}"
        assert_consistent(spark, whole)
