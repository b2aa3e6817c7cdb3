"""Late corrections reach user_tokens (issue 24): a date's events are removed upstream after it
was published, the date is run again, and every table equals a fresh run on the corrected input.
A user who lost the date's rows takes the tuple of its latest remaining date (with that date's
engagement), or leaves ``user_tokens`` when no row remains; the groups it leaves are re-ranked."""
from __future__ import annotations

import shutil

from pyspark.sql import functions as F

from pipelines.night.backfill import backfill
from pipelines.night.daily_job import run_day
from pipelines.lake.lake import Lake
from tests.conftest import make_settings
from tests.pipelines.collide_world import D1, D2, assert_consistent, identity_rows, write_collide_world
from tests.pipelines.lake_state import lake_state


def _remove_events(spark, settings, event_date: str, user_ids) -> None:
    ids = ", ".join(str(int(u)) for u in user_ids)
    spark.sql(f"DELETE FROM delta.`{Lake(spark, settings).path('raw_events')}` "
              f"WHERE event_date = DATE'{event_date}' AND user_id IN ({ids})")


def test_a_corrected_date_reaches_user_tokens_on_the_collide_world(spark, collided, trained_lake, tmp_path):
    shutil.copytree(collided["root"], tmp_path / "lake-copy")
    lake = make_settings(tmp_path / "lake-copy" / "lake", tmp_path / "lake-copy" / "model")
    fresh = write_collide_world(spark, trained_lake["root"], tmp_path / "fresh")
    # 11 was active on D1 only (leaves user_tokens); 12, 30 and 3 lose D2 (back to their D1 tuples:
    # 12 returns to group X, 30 leaves it)
    corrections = {D1: [11], D2: [12, 30, 3]}
    for event_date, users in corrections.items():
        for settings in (lake, fresh):
            _remove_events(spark, settings, event_date, users)

    for event_date in (D2, D1):     # corrections arrive in any order
        run_day(spark, lake, event_date, run_id=f"fix-{event_date}")
    backfill(spark, fresh, [D1, D2])    # equals the dates one by one on this world (test_backfill.py)

    identities = {row[0]: row for row in identity_rows(spark, lake)}
    assert 11 not in identities
    assert {uid: str(identities[uid][1]) for uid in (12, 30, 3)} == {12: D1, 30: D1, 3: D1}
    assert identity_rows(spark, lake) == identity_rows(spark, fresh)
    assert lake_state(spark, lake, with_run_ids=False)["user_day_tokens"] == \
        lake_state(spark, fresh, with_run_ids=False)["user_day_tokens"]
    groups = assert_consistent(spark, lake)
    assert next(m for m in groups.values() if 10 in m) == [12, 10, 13]   # engagement .7 (D1), .4 (D2), NaN as 0


def test_a_corrected_date_reaches_user_tokens_on_the_tiny_world(spark, published_lake, trained_lake, world_dates, tmp_path):
    """Both dates published; the last one loses users active on both dates (they fall back to the
    first date) and users active on it alone (they leave); re-running it equals a fresh run."""
    first, last = world_dates
    days = Lake(spark, published_lake).read("user_day_tokens")
    users = {d: {r["user_id"] for r in days.where(F.col("event_date") == d).select("user_id").distinct().collect()}
             for d in world_dates}
    both, last_only = sorted(users[first] & users[last])[:3], sorted(users[last] - users[first])[:3]
    assert both and last_only
    shutil.copytree(trained_lake["root"], tmp_path / "fresh")
    fresh = make_settings(tmp_path / "fresh" / "lake", tmp_path / "fresh" / "model")
    for settings in (published_lake, fresh):
        _remove_events(spark, settings, last, both + last_only)

    result = run_day(spark, published_lake, last, run_id="correction")
    assert result["publish"]["identities_changed"] >= len(both) + len(last_only)
    backfill(spark, fresh, world_dates)       # equals the dates one by one (test_backfill.py)

    identities = {row[0]: row for row in identity_rows(spark, published_lake)}
    assert not set(last_only) & set(identities)
    assert all(str(identities[uid][1]) == first for uid in both)
    assert identity_rows(spark, published_lake) == identity_rows(spark, fresh)
    assert lake_state(spark, published_lake, with_run_ids=False)["user_day_tokens"] == \
        lake_state(spark, fresh, with_run_ids=False)["user_day_tokens"]
    assert_consistent(spark, published_lake)
