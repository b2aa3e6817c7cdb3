"""The batched publish of a backfill dies after each of its commits, then is retried both ways:
the publish step alone (same runs), or the whole backfill again (new run ids, so run ids are left
out of that comparison); both equal the uninterrupted publish (issue 24; the one-date case and
the crash mechanism: tests/pipelines/test_publish_crashes.py).

The uninterrupted publish is also the check that the one identity MERGE of a backfill from an
empty ``user_tokens`` gives the identities of the dates one by one on colliding users (over a
table that already holds D2: tests/pipelines/test_backfill.py)."""
from __future__ import annotations

from pipelines.night.backfill import backfill
from pipelines.night.publish import publish_dates
from pipelines.night.day_run import DayRun, load_tokenizer_info
from pipelines.night.quality import check_quality_dates
from pipelines.night.stage import stage_dates
from pipelines.lake.lake import Lake
from tests.pipelines.collide_world import D1, D2, assert_consistent, write_collide_world
from tests.pipelines.crash_points import REACHED, copy_staged, crash_after, uninterrupted
from tests.pipelines.lake_state import lake_state


def test_a_backfill_survives_a_crash_after_every_commit_of_its_publish(spark, collided, trained_lake, tmp_path):
    staged_root = tmp_path / "staged"
    settings = write_collide_world(spark, trained_lake["root"], staged_root)
    tokenizer = load_tokenizer_info(settings)

    def runs(s):
        return [DayRun(spark, s, d, f"bf__{d}__1", tokenizer) for d in (D1, D2)]

    Lake(spark, settings).create_all(tokenizer.version)     # as `u2qt init-tables` does before a backfill
    stage_dates(runs(settings))
    check_quality_dates(runs(settings))
    want = uninterrupted(spark, staged_root, tmp_path, lambda s: publish_dates(runs(s)))
    assert want["identities"] == collided["after"][D2][0]     # suffixes, as_of, engagement: as one by one
    assert_consistent(spark, want["settings"])
    for row in Lake(spark, want["settings"]).read("user_tokens").collect():
        assert row["run_id"] == f"bf__{row['as_of']}__1"       # each identity row names the date's run
    # D1: every active user is new; D2: all six active users have a newer row (12, 30 move, 10's engagement)
    assert [want["published"][d]["identities_changed"] for d in (D1, D2)] == [10, 6]

    for point in REACHED:
        crashed = copy_staged(staged_root, tmp_path / point / "step")
        crash_after(point, lambda: publish_dates(runs(crashed)))
        whole = copy_staged(tmp_path / point / "step", tmp_path / point / "whole")

        publish_dates(runs(crashed))
        assert lake_state(spark, crashed) == want["state"], f"publish retry after {point}"
        backfill(spark, whole, [D1, D2], run_prefix="again")
        assert lake_state(spark, whole, with_run_ids=False) == want["loose"], f"backfill re-run after {point}"
        assert_consistent(spark, whole)
