"""The Spark writer: real Spark, real Delta (the `spark` fixture comes from tests/conftest.py)."""
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from pipelines.world import generate_world_frames, load_world_config, write_world
from pipelines.world.writer import SCHEMAS, TABLES

CONF = Path(__file__).resolve().parents[2] / "conf" / "world"
SORT_KEYS = {
    "raw_events": ["user_id", "event_ts", "source", "text", "event_date"],
    "user_profile": ["user_id", "as_of"],
    "user_labels": ["user_id", "task"],
    "rec_impressions": ["user_id", "event_date", "item_id"],
}
SOURCES = ["bill", "spm", "mini", "app", "search"]


def _cfg(**overrides):
    return load_world_config(CONF / "tiny.yaml", {"n_users": 24, "bad_row_rate": 0.05, **overrides})


@pytest.fixture(scope="module")
def worlds(spark, tmp_path_factory):
    """The same tiny world written with 1 and with 3 generation partitions."""
    out = {}
    for parts in (1, 3):
        root = str(tmp_path_factory.mktemp(f"world_p{parts}"))
        out[parts] = (root, write_world(spark, _cfg(num_partitions=parts), root))
    return out


def _read(spark, root, table):
    return spark.read.format("delta").load(f"{root}/{table}")


def _sorted(df, table):
    return df.orderBy(*[F.col(c).asc_nulls_first() for c in SORT_KEYS[table]])


def test_schemas_exact(spark, worlds):
    root, _ = worlds[1]
    for table in TABLES:
        got = [(f.name, f.dataType.simpleString()) for f in _read(spark, root, table).schema.fields]
        want = [(f.name, f.dataType.simpleString()) for f in SCHEMAS[table].fields]
        assert got == want, table
    assert _read(spark, root, "raw_events").inputFiles()  # written
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{root}/raw_events`").first()
    assert list(detail["partitionColumns"]) == ["event_date"]


def test_partitioning_does_not_change_output(spark, worlds):
    (root1, s1), (root3, s3) = worlds[1], worlds[3]
    assert s1.rows == s3.rows and s1.malformed_rows == s3.malformed_rows
    for table in TABLES:
        assert_df_equality(_sorted(_read(spark, root1, table), table), _sorted(_read(spark, root3, table), table))


def test_spark_output_equals_pure_generator(spark, worlds):
    """Same seed -> identical tables: the Delta tables hold exactly the pure generator's rows."""
    root, _ = worlds[3]
    frames = generate_world_frames(_cfg())
    frames["raw_events"] = frames["raw_events"].drop(columns="bad_kind")
    for table in TABLES:
        expected = spark.createDataFrame(frames[table].astype(object).where(frames[table].notna(), None),
                                         SCHEMAS[table])
        assert_df_equality(_sorted(_read(spark, root, table), table), _sorted(expected, table),
                           ignore_nullable=True)


def test_summary_counts_match_tables(spark, worlds):
    root, summary = worlds[1]
    for table in TABLES:
        assert summary.rows[table] == _read(spark, root, table).count() > 0
    assert summary.rows["user_profile"] == 24 and summary.rows["user_labels"] == 4 * 24


def test_malformed_rows_present_and_counted(spark, worlds):
    root, summary = worlds[1]
    ev = _read(spark, root, "raw_events")
    found = {
        "null_user_id": ev.where(F.col("user_id").isNull()).count(),
        "bad_source": ev.where(~F.col("source").isin(SOURCES)).count(),
        "empty_text": ev.where(F.col("text") == "").count(),
        "date_mismatch": ev.where(F.to_date("event_ts") != F.col("event_date")).count(),
    }
    assert found == summary.malformed_rows
    assert all(n > 0 for n in found.values()), found


def test_rec_split_even_and_stratified(spark, worlds):
    root, _ = worlds[1]
    rec = _read(spark, root, "rec_impressions")
    cfg = _cfg()
    counts = {(r["split"], r["clicked"]): r["count"] for r in rec.groupBy("split", "clicked").count().collect()}
    for clicked in (0, 1):
        assert abs(counts.get(("valid", clicked), 0) - counts.get(("test", clicked), 0)) <= cfg.rec_eval_days
    train_dates = rec.where("split = 'train'").agg(F.countDistinct("event_date")).first()[0]
    assert train_dates == cfg.rec_train_days


def test_append_mode_appends(spark, tmp_path):
    cfg = _cfg(n_users=3, bad_row_rate=0.0, num_partitions=1)
    root = str(tmp_path / "w")
    first = write_world(spark, cfg, root)
    second = write_world(spark, cfg, root, mode="append")
    assert second.rows == first.rows
    assert _read(spark, root, "user_profile").count() == 2 * first.rows["user_profile"]
    with pytest.raises(ValueError, match="mode"):
        write_world(spark, cfg, root, mode="upsert")


def test_the_world_keeps_going_with_the_next_day_moved(spark, worlds):
    """write_next_days: the next date's raw_events as the extended world makes them (what the
    demo's fourth night reads), the earlier dates untouched, the shifted sources moved."""
    import datetime as dt
    import shutil

    from pipelines.world import write_next_days
    from pipelines.world.shift import NEW_ITEMS

    root, _ = worlds[1]
    copy = str(Path(root).parent / "world_next")
    shutil.copytree(root, copy)
    cfg = _cfg(num_partitions=1)
    moved = load_world_config(CONF / "tiny.yaml", {"n_users": 24, "bad_row_rate": 0.05, "num_partitions": 1,
                                                    "vocabulary_shift": {"from_date": str(cfg.start_date + dt.timedelta(days=cfg.n_days)),
                                                                         "sources": ["search"], "share": 1.0}})
    before = _read(spark, copy, "raw_events").count()
    new = write_next_days(spark, moved, copy)
    assert new == [(cfg.start_date + dt.timedelta(days=cfg.n_days)).isoformat()]
    events = _read(spark, copy, "raw_events")
    assert events.where(F.col("event_date") < F.lit(new[0]).cast("date")).count() == before
    day = events.where(F.col("event_date") == F.lit(new[0]).cast("date")).collect()
    searches = [r["text"] for r in day if r["source"] == "search" and (r["text"] or "").strip()]   # not the malformed copies
    assert day and searches and all(any(item in t for item in NEW_ITEMS) for t in searches)
    assert not any(any(item in (r["text"] or "") for item in NEW_ITEMS) for r in day if r["source"] in ("bill", "spm"))
