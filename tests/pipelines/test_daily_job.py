"""The nightly job on a tiny world: real Spark, real Delta, real MiniLM + tiny MRQ-VAE."""
from __future__ import annotations

import numpy as np
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from pipelines.lake.views import read_view
from pipelines.lake import tables
from pipelines.errors import QualityGateFailed
from pipelines.night.daily_job import run_day
from pipelines.night.day_run import load_tokenizer_info
from pipelines.lake.lake import Lake

HISTORY_COLUMNS = ["user_id", "source", "dates", "tokens", "tokens_per_day", "n_days", "last_date", "tokenizer_version"]


def _expected_active(spark, settings, event_date):
    """(user_id, event_date, source) the night must tokenize, computed straight from the inputs."""
    raw = Lake(spark, settings).read("raw_events").where(F.col("event_date") == event_date)
    known = list(settings.sources_config().text_sources)
    valid = raw.where(
        F.col("user_id").isNotNull() & F.col("source").isin(known) & (F.length(F.trim("text")) > 0)
        & (F.to_date("event_ts") == F.col("event_date"))
    )
    text_rows = valid.select("user_id", "event_date", "source").distinct()
    tabular = valid.select("user_id", "event_date").distinct().join(
        Lake(spark, settings).read("user_profile").select("user_id"), "user_id"
    ).withColumn("source", F.lit("tabular"))
    return text_rows.unionByName(tabular.select("user_id", "event_date", "source"))


def test_day_tokens_cover_every_active_user_source(spark, two_days):
    settings = two_days["settings"]
    for event_date in two_days["dates"]:
        got = (Lake(spark, settings).read("user_day_tokens")
               .where(F.col("event_date") == event_date).select("user_id", "event_date", "source"))
        expected = _expected_active(spark, settings, event_date)
        assert expected.count() > 0
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_codes_have_one_token_per_level_within_codebook(spark, two_days, trained_lake):
    from pipelines.night.day_run import load_tokenizer_info

    info = load_tokenizer_info(two_days["settings"])
    rows = Lake(spark, two_days["settings"]).read("user_day_tokens").collect()
    assert rows
    for row in rows:
        assert len(row["codes"]) == info.num_levels
        assert all(0 <= c < info.num_codes for c in row["codes"])
        assert row["tokenizer_version"] == info.version


def test_history_holds_each_day_in_order(spark, two_days):
    settings = two_days["settings"]
    history = read_view(Lake(spark, settings), "user_token_history")
    day = Lake(spark, settings).read("user_day_tokens")
    # rebuild the expected history from the fact table: dates in order, codes concatenated
    expected = (day.groupBy("user_id", "source")
                .agg(F.array_sort(F.collect_list(F.struct("event_date", "codes"))).alias("e"))
                .select("user_id", "source",
                        F.transform("e", lambda x: x["event_date"]).alias("dates"),
                        F.flatten(F.transform("e", lambda x: x["codes"])).alias("tokens")))
    assert_df_equality(history.select("user_id", "source", "dates", "tokens"), expected,
                       ignore_row_order=True, ignore_nullable=True)
    assert history.where(F.size("tokens") != F.col("n_days") * F.col("tokens_per_day")).count() == 0


def test_collision_suffixes_match_reference(spark, two_days):
    from u2qt_core.collisions import collision_suffixes

    identity = Lake(spark, two_days["settings"]).read("user_tokens").toPandas()
    assert len(identity) > 0
    expected = collision_suffixes(np.stack(identity["token_tuple"].to_numpy()).astype(np.int64),
                                  identity["engagement"].to_numpy(), identity["user_id"].to_numpy())
    assert identity["collision_suffix"].tolist() == expected.tolist()


def test_rerunning_a_date_leaves_history_unchanged(spark, published_lake, world_dates):
    # both dates already run in order (a copy of two_days); the first again, under a new run id
    before = read_view(Lake(spark, published_lake), "user_token_history").select(*HISTORY_COLUMNS).toPandas()
    identity_before = Lake(spark, published_lake).read("user_tokens").drop("run_id").toPandas()
    published = ("user_day_tokens", "user_tokens")
    versions = {name: _delta_versions(spark, Lake(spark, published_lake).path(name)) for name in published}
    rerun = run_day(spark, published_lake, world_dates[0])
    # nothing changed, so nothing was written: no new version of the fact (history) or identity tables
    assert rerun["publish"]["history_rows_changed"] == 0
    assert rerun["publish"]["identities_changed"] == 0
    assert {name: _delta_versions(spark, Lake(spark, published_lake).path(name)) for name in published} == versions
    after = read_view(Lake(spark, published_lake), "user_token_history").select(*HISTORY_COLUMNS).toPandas()
    key = ["user_id", "source"]
    before, after = before.sort_values(key).reset_index(drop=True), after.sort_values(key).reset_index(drop=True)
    assert before.drop(columns=["dates", "tokens"]).equals(after.drop(columns=["dates", "tokens"]))
    assert [list(x) for x in before["tokens"]] == [list(x) for x in after["tokens"]]
    assert [list(x) for x in before["dates"]] == [list(x) for x in after["dates"]]
    identity_after = Lake(spark, published_lake).read("user_tokens").drop("run_id").toPandas()
    assert len(identity_after) == len(identity_before)
    day_rows = Lake(spark, published_lake).read("user_day_tokens").groupBy("event_date").count().collect()
    assert {str(r["event_date"]): r["count"] for r in day_rows}.keys() == set(world_dates)


def _delta_versions(spark, path: str) -> int:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, path).history().count()


def test_backfilling_an_older_date_gives_the_in_order_history(spark, two_days, fresh_lake, world_dates):
    for event_date in reversed(world_dates):  # newest first: the older date is a backfill
        run_day(spark, fresh_lake, event_date)
    in_order = read_view(Lake(spark, two_days["settings"]), "user_token_history").select("user_id", "source", "dates", "tokens", "last_date")
    backfilled = read_view(Lake(spark, fresh_lake), "user_token_history").select("user_id", "source", "dates", "tokens", "last_date")
    assert_df_equality(backfilled, in_order, ignore_row_order=True, ignore_nullable=True)


def test_failed_quality_gate_publishes_nothing(spark, fresh_lake, world_dates):
    strict = fresh_lake.model_copy(update={"quality": fresh_lake.quality.model_copy(update={"min_active_users": 10**6})})
    with pytest.raises(QualityGateFailed, match="min_active_users"):
        run_day(spark, strict, world_dates[0])
    assert not tables.table_exists(spark, Lake(spark, strict).path("user_day_tokens"))
    failed = Lake(spark, strict).read("run_metrics").where("step = 'quality' AND status = 'failed'").count()
    assert failed == 1


def test_a_second_tokenizer_version_never_mixes_codes(spark, fresh_lake, world_dates):
    """Tables pinned to another version are never written with this one: a night pinned to
    their generation is refused; a night left to resolve its generation writes its own."""
    run_day(spark, fresh_lake, world_dates[0])
    path = Lake(spark, fresh_lake).path("user_day_tokens")
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('{tables.TOKENIZER_VERSION_PROPERTY}' = 'u2qt-000000000000')")
    before = spark.read.format("delta").load(path).count()
    with pytest.raises(tables.TokenizerVersionMismatch, match="u2qt-000000000000"):
        run_day(spark, fresh_lake, world_dates[1], run_id="pinned-to-old-tables", generation="")
    run_day(spark, fresh_lake, world_dates[1], run_id="own-generation")   # the promoted version's own generation
    version = load_tokenizer_info(fresh_lake).version
    own = Lake.for_version(spark, fresh_lake, version)
    assert own.path("user_day_tokens") != path
    written = own.read("user_day_tokens")
    assert {r[0] for r in written.select("tokenizer_version").distinct().collect()} == {version}
    assert spark.read.format("delta").load(path).count() == before
