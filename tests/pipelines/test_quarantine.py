"""Bad input is quarantined with a reason, counted, and never crashes the night."""
from __future__ import annotations

import shutil
from collections import Counter

from pyspark.sql import functions as F

from pipelines.night.daily_job import run_day
from pipelines.lake.lake import Lake
from tests.conftest import make_settings


def test_malformed_rows_are_quarantined_with_reasons(spark, trained_lake, tmp_path):
    from pipelines.world import write_world

    shutil.copytree(trained_lake["root"], tmp_path, dirs_exist_ok=True)
    settings = make_settings(tmp_path / "lake", tmp_path / "model", quality={"max_quarantine_rate": 1.0})
    world = trained_lake["world"].model_copy(update={"bad_row_rate": 0.2})
    summary = write_world(spark, world, settings.tables_root)
    injected = sum(summary.malformed_rows.values())
    assert injected > 0
    event_dates = sorted({str(r["event_date"]) for r in Lake(spark, settings).read("raw_events")
                          .where(F.col("event_date").isNotNull()).select("event_date").distinct().collect()})
    for event_date in event_dates:
        run_day(spark, settings, event_date)
    quarantine = Lake(spark, settings).read("quarantine").where("source_table = 'raw_events'")
    kind_of = {"user_id is null": "null_user_id", "text is empty": "empty_text"}
    counted = Counter(kind_of.get(r["reason"]) or ("bad_source" if r["reason"].startswith("unknown source") else
                                                   "date_mismatch" if " is not on event_date " in r["reason"] else
                                                   r["reason"]) for r in quarantine.select("reason").collect())
    # each injected row is quarantined once, with the reason of its kind, and nothing else is
    assert counted == Counter({kind: n for kind, n in summary.malformed_rows.items() if n})
    # nothing is lost: every raw row was read by one night (raw rows = tokenized input + quarantined)
    metrics = Lake(spark, settings).read("run_metrics").where("step = 'stage'")
    totals = metrics.agg(F.sum("quarantined_rows"), F.sum(F.get_json_object("metrics_json", "$.raw_rows").cast("long"))).first()
    assert totals[0] == injected
    assert totals[1] == Lake(spark, settings).read("raw_events").count()


def test_bad_pipeline_config_names_the_key(tmp_path):
    import pytest

    from pipelines.config.settings import load_settings
    from u2qt_core.errors import ConfigError

    bad = tmp_path / "pipeline.yaml"
    bad.write_text("tables_root: x\nmodel_dir: y\nquality:\n  max_collision_rate: 3\n")
    with pytest.raises(ConfigError, match=r"quality\.max_collision_rate"):
        load_settings(bad)
    bad.write_text("tables_root: x\nmodel_dir: y\ninference:\n  partitons: 3\n")
    with pytest.raises(ConfigError, match=r"inference\.partitons"):
        load_settings(bad)


def test_tabular_features_in_spark_match_python(spark):
    from pipelines.night.documents import feature_expressions, tabular_vector
    from pipelines.config.settings import load_sources

    features = load_sources().tabular.features
    row = {"age": 33, "city_tier": 2, "account_age_days": 400, "num_cards": 3, "avg_balance": 1234.5,
           "credit_score": 700, "is_merchant": True, "gender": "F", "device_os": "harmonyos"}
    frame = spark.createDataFrame([row])
    got = frame.select(F.array(*feature_expressions(features)).alias("x")).first()["x"]
    assert len(got) == load_sources().tabular.width == 13
    assert got == [float(__import__("numpy").float32(v)) for v in tabular_vector(row, features)]
