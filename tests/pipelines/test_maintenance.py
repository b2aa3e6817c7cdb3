"""``u2qt maintain`` on a real lake: compaction, OPTIMIZE with Z-order, VACUUM; the history and
the identities read the same afterwards, and a second run has nothing to compact."""
from __future__ import annotations

from chispa import assert_df_equality

from pipelines.lake.views import read_view
from pipelines.lake import tables
from pipelines.ops.maintenance import maintain
from pipelines.config.settings import HistoryConfig, MaintenanceConfig
from pipelines.lake.lake import Lake


def test_maintain_compacts_optimizes_and_vacuums(spark, published_lake, world_dates):
    settings = published_lake.model_copy(update={
        "history": HistoryConfig(period_days=1),
        "maintenance": MaintenanceConfig(vacuum_retain_hours=0, log_retention_days=7),
    })
    history_before = read_view(Lake(spark, settings), "user_token_history").drop("updated_at")
    history_before = spark.createDataFrame(history_before.collect(), history_before.schema)
    identity_before = Lake(spark, settings).read("user_tokens").collect()

    report = maintain(Lake.open(spark, settings))
    assert report["history"]["compacted"] == world_dates
    assert set(report["tables"]) >= {"user_token_history_base", "user_tokens", "user_profile", "user_day_tokens"}
    identity = report["tables"]["user_tokens"]
    assert identity["zorder"] and identity["parquet_files_after"] <= identity["parquet_files_before"]
    assert report["tables"]["user_day_tokens"]["parquet_files_after"] <= report["tables"]["user_day_tokens"]["parquet_files_before"]
    props = tables.table_properties(spark, Lake(spark, settings).path("user_tokens"))
    assert props["delta.logRetentionDuration"] == "interval 7 days"

    history_after = read_view(Lake(spark, settings), "user_token_history").drop("updated_at")
    assert_df_equality(history_after, history_before, ignore_row_order=True, ignore_nullable=True)
    assert sorted(Lake(spark, settings).read("user_tokens").collect()) == sorted(identity_before)
    again = maintain(Lake.open(spark, settings))
    assert again["history"]["compacted"] == []
    assert spark.conf.get("spark.databricks.delta.retentionDurationCheck.enabled") == "true"

