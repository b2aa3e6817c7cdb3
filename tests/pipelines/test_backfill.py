"""``u2qt backfill`` as one Spark job: the same tables, row for row, as running the dates one
by one; an empty date inside the range is recorded and skipped; a failing gate publishes the dates
before it; a re-run after a crash between the batched writes completes the backfill."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from typer.testing import CliRunner

from pipelines.night import commit_points

from pipelines.lake import tables
from pipelines.lake.views import read_view
from pipelines.night.backfill import backfill
from pipelines.cli.main import app
from pipelines.night.daily_job import run_day
from pipelines.night.quality import QualityGateFailed
from pipelines.lake.lake import Lake
from tests.pipelines.collide_world import D1, D2, assert_consistent, identity_rows, write_collide_world


def test_backfill_matches_dates_run_one_by_one(spark, two_days, fresh_lake, world_dates):
    empty = (date.fromisoformat(world_dates[0]) - timedelta(days=1)).isoformat()   # no raw_events
    results = backfill(spark, fresh_lake, [world_dates[1], empty, world_dates[0]])
    assert list(results) == [empty, *world_dates]
    assert [r["status"] for r in results.values()] == ["empty", "ok", "ok"]

    one_by_one = two_days["settings"]
    for name, drop in (("user_day_tokens", ["run_id"]), ("user_tokens", ["run_id"]),
                       ("user_token_history", ["updated_at"])):
        got = read_view(Lake(spark, fresh_lake), name).drop(*drop)
        want = read_view(Lake(spark, one_by_one), name).drop(*drop)
        assert want.count() > 0
        assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    metrics = Lake(spark, fresh_lake).read("run_metrics")
    assert metrics.where((F.col("event_date") == empty) & (F.col("status") == "empty")).count() == 1
    assert metrics.where((F.col("event_date") == empty) & (F.col("step") != "backfill")).count() == 0
    ok = metrics.where(F.col("status") == "ok").groupBy("step").count().collect()
    # the tokenizer is resolved once for the whole backfill (recorded on its first date with events)
    # (drift: the gates step's tokenizer-age row, one per date)
    assert {r["step"]: r["count"] for r in ok} == {"resolve": 1, "stage": 2, "quality": 2, "drift": 2, "publish": 2}
    # both dates were staged by the one pass, then cleared as each was published (staging.keep_days 0)
    assert Lake(spark, fresh_lake).read("staging_day_tokens").count() == 0
    publishes = metrics.where(F.col("step") == "publish").select("metrics_json").collect()
    assert all('"staging_rows_cleared": 0' not in r["metrics_json"] for r in publishes)


def test_backfill_cli_rejects_ambiguous_or_bad_dates():
    runner = CliRunner()
    both = runner.invoke(app, ["backfill", "2026-01-05", "--dates", "2026-01-06"])
    assert both.exit_code == 2 and "not both" in both.output
    bad = runner.invoke(app, ["backfill", "--dates", "2026-01-05,2026-13-01"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


TABLES_COMPARED = (("user_day_tokens", ["run_id"]), ("user_tokens", ["run_id"]), ("user_token_history", ["updated_at"]))


def _assert_same_tables(spark, got_settings, want_settings) -> None:
    for name, drop in TABLES_COMPARED:
        got = read_view(Lake(spark, got_settings), name).drop(*drop)
        want = read_view(Lake(spark, want_settings), name).drop(*drop)
        assert want.count() > 0
        assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


def _versions(spark, settings) -> dict[str, int]:
    from delta.tables import DeltaTable

    return {name: DeltaTable.forPath(spark, Lake(spark, settings).path(name)).history(1).collect()[0]["version"]
            for name in ("user_day_tokens", "user_tokens")}


def _steps(spark, settings, status: str) -> set[tuple[str, str]]:
    rows = Lake(spark, settings).read("run_metrics").where(F.col("status") == status).collect()
    return {(r["step"], str(r["event_date"])) for r in rows}


def test_failing_gate_mid_backfill_publishes_the_dates_before_it(spark, two_days, fresh_lake, world_dates):
    """D1 fails its quarantine gate (every row doubled): D0 is published, D1 and the later D2
    are not, D2 is not even gated; fixing D1 and running the backfill again gives the tables of
    the dates one by one (D0 unchanged: nothing rewritten)."""
    d0, d1 = world_dates
    d2 = (date.fromisoformat(d1) + timedelta(days=1)).isoformat()
    raw_path = Lake(spark, fresh_lake).path("raw_events")
    day1 = Lake(spark, fresh_lake).read("raw_events").where(F.col("event_date") == d1).localCheckpoint()
    shifted = (day1.withColumn("event_ts", F.col("event_ts") + F.expr("INTERVAL 1 DAY"))
               .withColumn("event_date", F.date_add("event_date", 1)))
    day1.unionByName(day1).unionByName(shifted).write.format("delta").mode("overwrite").option(
        "replaceWhere", f"event_date IN (DATE'{d1}', DATE'{d2}')").save(raw_path)

    with pytest.raises(QualityGateFailed, match=f"{d1}: quality gates failed.*quarantine rate"):
        backfill(spark, fresh_lake, [d0, d1, d2])
    days = Lake(spark, fresh_lake).read("user_day_tokens")
    assert {str(r["event_date"]) for r in days.select("event_date").distinct().collect()} == {d0}
    want = Lake(spark, two_days["settings"]).read("user_day_tokens").where(F.col("event_date") == d0)
    assert_df_equality(days.drop("run_id"), want.drop("run_id"), ignore_row_order=True, ignore_nullable=True)
    assert {s for s in _steps(spark, fresh_lake, "ok") if s[0] in ("quality", "publish")} == {("quality", d0), ("publish", d0)}
    assert _steps(spark, fresh_lake, "failed") == {("quality", d1)}
    staged = Lake(spark, fresh_lake).read("staging_day_tokens").select("event_date").distinct().collect()
    assert {str(r["event_date"]) for r in staged} == {d1, d2}     # staged, not published: re-run them

    day1.write.format("delta").mode("overwrite").option("replaceWhere", f"event_date = DATE'{d1}'").save(raw_path)
    results = backfill(spark, fresh_lake, [d0, d1])
    assert results[d0]["publish"]["history_rows_changed"] == 0 and results[d1]["publish"]["history_rows_changed"] > 0
    _assert_same_tables(spark, fresh_lake, two_days["settings"])


def test_backfill_rerun_after_a_crash_between_its_writes(spark, two_days, fresh_lake, world_dates):
    """A crash after the one user_day_tokens commit of both dates, before the identity MERGE:
    no publish is recorded, and running the backfill again completes it (the written dates are
    found unchanged, the identities are applied) with the tables of the dates one by one."""
    with commit_points.crash_after("user_day_tokens"), pytest.raises(commit_points.SimulatedCrash):
        backfill(spark, fresh_lake, world_dates)
    history = Lake(spark, fresh_lake).read("user_day_tokens").select("event_date").distinct().collect()
    assert {str(r["event_date"]) for r in history} == set(world_dates)
    identities = Lake(spark, fresh_lake).path("user_tokens")
    assert not tables.table_exists(spark, identities) or Lake(spark, fresh_lake).read("user_tokens").count() == 0
    assert not {("publish", d) for d in world_dates} & _steps(spark, fresh_lake, "ok")

    results = backfill(spark, fresh_lake, world_dates)
    assert all(results[d]["publish"]["history_rows_changed"] == 0 for d in world_dates)
    assert all(results[d]["publish"]["identities_changed"] > 0 for d in world_dates)
    _assert_same_tables(spark, fresh_lake, two_days["settings"])


def test_backfill_over_a_published_date_equals_the_dates_one_by_one_and_a_second_run_writes_nothing(
        spark, collided, trained_lake, tmp_path):
    """The one identity MERGE of a backfill over a ``user_tokens`` that already holds D2 gives the
    identities of the dates one by one, oldest first, on the collide world (D1's rows lose to the
    newer as_of, D2's are unchanged); running the same backfill again writes nothing. (From an
    empty table: the uninterrupted publish of tests/pipelines/test_backfill_crashes.py.)"""
    newer = write_collide_world(spark, trained_lake["root"], tmp_path / "newer")
    run_day(spark, newer, D2, run_id="d2-first")
    backfill(spark, newer, [D1, D2], run_prefix="bf")
    assert identity_rows(spark, newer) == collided["after"][D2][0]
    assert_consistent(spark, newer)

    before = _versions(spark, newer)
    again = backfill(spark, newer, [D1, D2])
    assert _versions(spark, newer) == before
    assert all(again[d]["publish"]["history_rows_changed"] == again[d]["publish"]["identities_changed"] == 0
               for d in (D1, D2))
