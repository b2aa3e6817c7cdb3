"""``u2qt backfill`` as one Spark job: the same tables, row for row, as running the dates one
by one; an empty date inside the range is recorded and skipped."""
from __future__ import annotations

from datetime import date, timedelta

from chispa import assert_df_equality
from pyspark.sql import functions as F
from typer.testing import CliRunner

from pipelines import tables
from pipelines.backfill import backfill
from pipelines.cli import app


def test_backfill_matches_dates_run_one_by_one(spark, two_days, fresh_lake, world_dates):
    empty = (date.fromisoformat(world_dates[0]) - timedelta(days=1)).isoformat()   # no raw_events
    results = backfill(spark, fresh_lake, [world_dates[1], empty, world_dates[0]])
    assert list(results) == [empty, *world_dates]
    assert [r["status"] for r in results.values()] == ["empty", "ok", "ok"]

    one_by_one = two_days["settings"]
    for name, drop in (("user_day_tokens", ["run_id"]), ("user_tokens", ["run_id"]),
                       ("user_token_history", ["updated_at"])):
        got = tables.read_table(spark, fresh_lake, name).drop(*drop)
        want = tables.read_table(spark, one_by_one, name).drop(*drop)
        assert want.count() > 0
        assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    metrics = tables.read_table(spark, fresh_lake, "run_metrics")
    assert metrics.where((F.col("event_date") == empty) & (F.col("status") == "empty")).count() == 1
    assert metrics.where((F.col("event_date") == empty) & (F.col("step") != "backfill")).count() == 0
    ok = metrics.where(F.col("status") == "ok").groupBy("step").count().collect()
    # one tokenizer resolution for the whole backfill (recorded on its first date with events)
    assert {r["step"]: r["count"] for r in ok} == {"resolve": 1, "stage": 2, "quality": 2, "publish": 2}
    # both dates were staged by the one pass, then cleared as each was published (staging.keep_days 0)
    assert tables.read_table(spark, fresh_lake, "staging_day_tokens").count() == 0
    publishes = metrics.where(F.col("step") == "publish").select("metrics_json").collect()
    assert all('"staging_rows_cleared": 0' not in r["metrics_json"] for r in publishes)


def test_backfill_cli_rejects_ambiguous_or_bad_dates():
    runner = CliRunner()
    both = runner.invoke(app, ["backfill", "2026-01-05", "--dates", "2026-01-06"])
    assert both.exit_code == 2 and "not both" in both.output
    bad = runner.invoke(app, ["backfill", "--dates", "2026-01-05,2026-13-01"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
