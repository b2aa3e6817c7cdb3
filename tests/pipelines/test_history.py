"""The history view over user_day_tokens: compaction, re-runs after changed inputs, retention,
and the nightly reads that must follow the day's active users (checked in the physical plan)."""
from __future__ import annotations

from chispa import assert_df_equality
from pyspark.sql import functions as F

from pipelines.lake import tables
from pipelines.night.daily_job import run_day
from pipelines.lake.history import compact_history, covered_periods, read_history
from pipelines.config.settings import HistoryConfig
from pipelines.lake.lake import Lake

ENTRY_COLUMNS = ["user_id", "source", "dates", "tokens"]


def expected_history(spark, settings):
    """The history rebuilt straight from the fact table: dates in order, codes concatenated."""
    day = Lake(spark, settings).read("user_day_tokens")
    return (day.groupBy("user_id", "source")
            .agg(F.array_sort(F.collect_list(F.struct("event_date", "codes"))).alias("e"))
            .select("user_id", "source",
                    F.transform("e", lambda x: x["event_date"]).alias("dates"),
                    F.flatten(F.transform("e", lambda x: x["codes"])).alias("tokens")))


def assert_history_matches_fact_table(spark, settings):
    history = read_history(Lake(spark, settings))
    assert_df_equality(history.select(*ENTRY_COLUMNS), expected_history(spark, settings),
                       ignore_row_order=True, ignore_nullable=True)
    assert history.where((F.size("tokens") != F.col("n_days") * F.col("tokens_per_day"))
                         | (F.element_at("dates", -1) != F.col("last_date"))).count() == 0


def test_view_has_the_history_columns(spark, trained_lake, two_days):
    assert [f.name for f in read_history(Lake(spark, trained_lake["settings"])).schema] == tables.USER_TOKEN_HISTORY.schema.names
    schema = read_history(Lake(spark, two_days["settings"])).schema
    assert [(f.name, f.dataType.simpleString()) for f in schema] == \
        [(f.name, f.dataType.simpleString()) for f in tables.USER_TOKEN_HISTORY.schema]


def test_rerun_after_inputs_changed_removes_stale_entries(spark, published_lake, world_dates):
    from delta.tables import DeltaTable

    settings = published_lake.model_copy(update={"history": HistoryConfig(max_days=180, period_days=1)})
    assert not tables.table_exists(spark, Lake(spark, settings).path("user_token_history_base"))  # the night never writes it
    compacted = compact_history(Lake(spark, settings))
    assert compacted["compacted"] == world_dates
    assert compact_history(Lake(spark, settings))["compacted"] == []      # nothing new: nothing rewritten
    assert_history_matches_fact_table(spark, settings)

    first = world_dates[0]
    day = Lake(spark, settings).read("user_day_tokens").where(F.col("event_date") == first)
    text = day.where("source != 'tabular'")
    per_user = text.groupBy("user_id").agg(F.collect_set("source").alias("s"), F.count("*").alias("n"))
    keeper = per_user.where("n >= 2").orderBy("user_id").first()          # loses one source's events
    gone = per_user.where(F.col("user_id") != keeper["user_id"]).orderBy("user_id").first()  # loses all
    dropped_source = sorted(keeper["s"])[0]
    DeltaTable.forPath(spark, Lake(spark, settings).path("raw_events")).delete(
        f"event_date = DATE'{first}' AND (user_id = {gone['user_id']} OR "
        f"(user_id = {keeper['user_id']} AND source = '{dropped_source}'))")

    rerun = run_day(spark, settings, first)
    assert rerun["publish"]["history_rows_changed"] >= 2
    assert first not in {d.isoformat() for d in covered_periods(Lake(spark, settings))}   # re-published: uncovered
    assert_history_matches_fact_table(spark, settings)
    history = read_history(Lake(spark, settings))
    on_first = F.array_contains("dates", F.to_date(F.lit(first)))
    assert history.where((F.col("user_id") == gone["user_id"]) & on_first).count() == 0
    assert history.where((F.col("user_id") == keeper["user_id"]) & (F.col("source") == dropped_source) & on_first).count() == 0
    assert history.where((F.col("user_id") == keeper["user_id"]) & on_first).count() >= 1

    assert compact_history(Lake(spark, settings))["compacted"] == [first]
    assert_history_matches_fact_table(spark, settings)


def test_retention_bounds_a_row(spark, published_lake, world_dates):
    newest = world_dates[-1]
    short = published_lake.model_copy(update={"history": HistoryConfig(max_days=1, period_days=1)})
    compact_history(Lake(spark, short))
    history = read_history(Lake(spark, short))
    assert history.count() > 0
    assert history.where(F.col("dates") != F.array(F.to_date(F.lit(newest)))).count() == 0
    assert history.where(F.col("n_days") != 1).count() == 0
    expected = (Lake(spark, short).read("user_day_tokens").where(F.col("event_date") == newest)
                .select("user_id", "source", F.array("event_date").alias("dates"), F.col("codes").alias("tokens")))
    assert_df_equality(history.select(*ENTRY_COLUMNS), expected, ignore_row_order=True, ignore_nullable=True)
    assert covered_periods(Lake(spark, short)) and all(d.isoformat() == newest for d in covered_periods(Lake(spark, short)))


def _plan(frame) -> str:
    """The executed plan as text, scan locations in full: Spark cuts them to
    spark.sql.maxMetadataStringLength (100) characters, which drops the table folder's name
    from a long temp path (pytest-xdist adds a popen-gwN level)."""
    spark = frame.sparkSession
    previous = spark.conf.get("spark.sql.maxMetadataStringLength")
    spark.conf.set("spark.sql.maxMetadataStringLength", "100000")
    try:
        return frame._jdf.queryExecution().executedPlan().toString()
    finally:
        spark.conf.set("spark.sql.maxMetadataStringLength", previous)


def test_profile_reads_rank_only_the_active_users(spark, trained_lake, world_dates):
    """The window that picks each user's newest profile runs above the join with the day's
    active users: the sort follows the active users, not every user's snapshots."""
    from pipelines.night.documents import profiles_as_of

    settings = trained_lake["settings"]
    profiles = Lake(spark, settings).read("user_profile")
    active = (Lake(spark, settings).read("raw_events").where(F.col("event_date") == world_dates[0])
              .select("user_id", "event_date").distinct())
    plan = _plan(profiles_as_of(profiles, active))
    below = plan[plan.index("Window"):]
    assert "Join" in below, plan
    assert below.index("Join") < below.index("user_profile"), plan
