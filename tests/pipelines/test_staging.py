"""Stage counts (one aggregation + Delta commit metrics) and the clearing of published staging."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from pipelines.night.daily_job import run_day
from pipelines.night.day_run import DayRun, load_tokenizer_info
from pipelines.night.publish import publish
from pipelines.night.publish import StagingCleared
from pipelines.lake.lake import Lake


def _staged_dates(spark, settings) -> set[str]:
    rows = Lake(spark, settings).read("staging_day_tokens").select("event_date").distinct().collect()
    return {str(r["event_date"]) for r in rows}


def test_stage_counts_match_the_tables_and_published_staging_is_cleared(spark, fresh_lake, world_dates):
    settings = fresh_lake.model_copy(update={"staging": fresh_lake.staging.model_copy(update={"keep_days": 1})})
    first = run_day(spark, settings, world_dates[0], run_id="t-1")
    assert _staged_dates(spark, settings) == {world_dates[0]}  # kept: within keep_days of its own publish
    second = run_day(spark, settings, world_dates[1], run_id="t-2")
    assert _staged_dates(spark, settings) == {world_dates[1]}  # the first date is now a day older: gone
    assert second["publish"]["staging_rows_cleared"] == first["stage"]["token_rows"] > 0

    for metrics, event_date in [(first, world_dates[0]), (second, world_dates[1])]:
        raw = Lake(spark, settings).read("raw_events").where(F.col("event_date") == event_date)
        day = Lake(spark, settings).read("user_day_tokens").where(F.col("event_date") == event_date)
        quarantined = (Lake(spark, settings).read("quarantine")
                       .where((F.col("event_date") == event_date) & (F.col("source_table") == "raw_events")))
        assert metrics["stage"]["raw_rows"] == raw.count()
        assert metrics["stage"]["token_rows"] == day.count() == metrics["publish"]["token_rows"]
        assert metrics["stage"]["active_users"] == day.select("user_id").distinct().count()
        assert metrics["stage"]["quarantined_rows"] == quarantined.count()

    # keep_days 0: publishing clears the date itself; publishing it again in the same run (a task
    # retry) finds it published and writes nothing; another run without a stage of its own is refused
    info = load_tokenizer_info(fresh_lake)
    run = DayRun(spark, fresh_lake, world_dates[1], "t-2", info)
    assert publish(run)["staging_rows_cleared"] == second["stage"]["token_rows"]
    assert _staged_dates(spark, settings) == set()
    again = publish(run)
    assert again["already_published"] and again["token_rows"] == second["stage"]["token_rows"]
    with pytest.raises(StagingCleared, match=f"{world_dates[1]} and this run \\(t-3\\)"):
        publish(DayRun(spark, fresh_lake, world_dates[1], "t-3", info))
    assert Lake(spark, settings).read("user_day_tokens").where(F.col("event_date") == world_dates[1]).count() \
        == second["stage"]["token_rows"]
