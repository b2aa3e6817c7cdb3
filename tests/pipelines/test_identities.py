"""Collision suffixes on a world built to collide: the Spark re-rank against the numpy reference,
users leaving and joining groups, and healing after publish stops between (or inside) its writes."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from pipelines.night import commit_points

from pipelines.night.publish import publish
from pipelines.night.quality import check_quality
from pipelines.night.stage import stage
from pipelines.night.day_run import DayRun, load_tokenizer_info
from pipelines.lake.lake import Lake
from tests.pipelines.collide_world import (D1, D2, GROUP_X_D2, GROUP_Y_D2, assert_consistent, identity_rows,
                                           write_collide_world)


def _group_of(groups: dict[tuple, list[int]], user_id: int) -> list[int]:
    return next(members for members in groups.values() if user_id in members)


def test_spark_rerank_matches_reference_as_users_leave_and_join(collided):
    groups_d1 = collided["after"][D1][1]
    assert _group_of(groups_d1, 10) == [10, 12, 11, 13]      # engagement .9 .7 .5 NaN (ranked as 0.0)
    assert _group_of(groups_d1, 20) == [21, 20]
    groups_d2 = collided["after"][D2][1]
    # 12 left X (11 and 13, inactive on D2, move up), 30 joined X, 10's engagement fell to .4
    assert _group_of(groups_d2, 11) == [30, 11, 10, 13]
    engagement = {row[0]: row[4] for row in collided["after"][D2][0]}
    assert engagement[13] == 0.0 and engagement[3] == .6
    assert set(_group_of(groups_d2, 11)) == GROUP_X_D2
    assert _group_of(groups_d2, 12) == [21, 12, 20]
    assert set(_group_of(groups_d2, 12)) == GROUP_Y_D2
    assert all(len(_group_of(groups_d2, uid)) == 1 for uid in (1, 2, 3))


def test_identities_heal_after_crashes_and_damage(spark, collided, trained_lake, tmp_path):
    """Crashes after publish's first commits, one after another, then damage; every commit point
    and both retry styles: tests/pipelines/test_publish_crashes.py."""
    settings = write_collide_world(spark, trained_lake["root"], tmp_path)
    tokenizer = load_tokenizer_info(settings)
    crashes = {D1: ["user_day_tokens", "user_tokens"], D2: ["user_tokens"]}
    for event_date in (D1, D2):
        run = DayRun(spark, settings, event_date, f"crashy-{event_date}", tokenizer)
        stage(run)
        check_quality(run)
        for point in crashes[event_date]:
            with commit_points.crash_after(point), pytest.raises(commit_points.SimulatedCrash):
                publish(run)
        publish(run)
        assert identity_rows(spark, settings) == collided["after"][event_date][0]

    # damage of the kind older code left behind: one group all on suffix 0, another with a gap
    path = Lake(spark, settings).path("user_tokens")
    spark.sql(f"UPDATE delta.`{path}` SET collision_suffix = 0 WHERE user_id IN (10, 11, 13, 30)")
    spark.sql(f"UPDATE delta.`{path}` SET collision_suffix = collision_suffix + 1 WHERE user_id IN (12, 20)")
    # a re-run of the date is stage + publish: publish cleared the date's staged rows (staging.keep_days 0)
    rerun = DayRun(spark, settings, D2, "rerun-D2", tokenizer)
    stage(rerun)
    publish(rerun)
    assert identity_rows(spark, settings) == collided["after"][D2][0]
    assert_consistent(spark, settings)


def test_identity_reads_follow_the_days_users(spark, collided):
    """The re-rank's window sees only the touched groups: the physical plan semi-joins
    user_tokens with the day's keys below the window; a consistent table gets no write."""
    from pipelines.night import identities

    settings = collided["settings"]
    path = Lake(spark, settings).path("user_tokens")
    touched = Lake(spark, settings).read("user_tokens").where(F.col("user_id") == 12).select("token_tuple")
    changes = identities.identity_changes(spark, path, upserts=None, removed=None, touched=touched)
    plan = changes._jdf.queryExecution().executedPlan().toString()
    window_at = plan.find("Window")
    assert window_at >= 0 and "LeftSemi" in plan[window_at:], plan
    assert changes.count() == 0
    assert identities.commit_identities(spark, path, upserts=None, removed=None, touched=touched) == 0
