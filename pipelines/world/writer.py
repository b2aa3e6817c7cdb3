"""Spark writer: the synthetic world as path-based Delta tables under ``tables_root``.

A thin layer over :mod:`pipelines.world.generator`: user ids come from ``spark.range`` and each
partition generates its own users with ``mapInPandas``; nothing is collected on the driver.
Output does not depend on the number of partitions, because every draw depends only on
(seed, user_id, day) and the only global step (the valid/test split of the rec eval days) is a
deterministic window over a total order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator, Literal

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from pipelines.lake.schemas import (
    INPUT_SCHEMAS,
    RAW_EVENTS_SCHEMA,
    REC_IMPRESSIONS_SCHEMA,
    USER_LABELS_SCHEMA,
    USER_PROFILE_SCHEMA,
)

from .config import BAD_ROW_KINDS, WorldConfig
from .generator import EVENT_COLUMNS, LABEL_COLUMNS, PROFILE_COLUMNS, REC_COLUMNS
from .outcomes import events_frame, labels_frame, profile_frame, rec_frame

log = logging.getLogger(__name__)

TABLES: tuple[str, ...] = tuple(INPUT_SCHEMAS)
SCHEMAS: dict[str, StructType] = INPUT_SCHEMAS
PARTITION_COLUMNS: dict[str, list[str]] = {"raw_events": ["event_date"]}

# Internal columns that travel with the generated rows and are dropped before writing.
_EVENTS_INTERNAL = StructType(RAW_EVENTS_SCHEMA.fields + [StructField("bad_kind", StringType(), True)])
_REC_INTERNAL = StructType(REC_IMPRESSIONS_SCHEMA.fields + [StructField("split_key", DoubleType(), True)])

_FLUSH_ROWS = 50_000  # rows per pandas batch handed back to Spark


@dataclass
class WorldSummary:
    tables_root: str
    mode: str
    rows: dict[str, int] = field(default_factory=dict)  # rows written per table by this call
    malformed_rows: dict[str, int] = field(default_factory=dict)  # raw_events rows injected, per kind
    seconds: float = 0.0

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed_rows.values())


def _batched(config: WorldConfig, build, columns: list[str], batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Run ``build(config, ids)`` over chunks of user ids, yielding frames of bounded size."""
    for batch in batches:
        ids = batch["id"].to_numpy()
        # ~ a few hundred users per chunk keeps batches near _FLUSH_ROWS for typical worlds
        for start in range(0, len(ids), 500):
            df = build(config, [int(i) for i in ids[start:start + 500]])
            if len(df):
                yield df[columns]


def _cast(df: pd.DataFrame, schema: StructType) -> pd.DataFrame:
    out = df.copy()
    for f in schema.fields:
        if isinstance(f.dataType, LongType):
            out[f.name] = out[f.name].astype("Int64")
        elif isinstance(f.dataType, IntegerType):
            out[f.name] = out[f.name].astype("Int32")
        elif isinstance(f.dataType, DoubleType):
            out[f.name] = out[f.name].astype("float64")
        elif isinstance(f.dataType, BooleanType):
            out[f.name] = out[f.name].astype(bool)
        elif isinstance(f.dataType, TimestampType):
            out[f.name] = pd.to_datetime(out[f.name])
    return out


def _user_ids(spark: SparkSession, config: WorldConfig) -> DataFrame:
    parts = config.num_partitions or spark.sparkContext.defaultParallelism
    parts = max(1, min(parts, config.n_users))
    return spark.range(config.user_id_start, config.user_id_start + config.n_users, 1, numPartitions=parts)


def build_frames(spark: SparkSession, config: WorldConfig) -> dict[str, DataFrame]:
    """Lazy Spark DataFrames of the four tables (raw_events keeps an internal ``bad_kind``)."""
    ids = _user_ids(spark, config)
    cfg = config  # captured by the closures below (pydantic models pickle)

    def gen_events(batches):
        yield from (_cast(d, _EVENTS_INTERNAL) for d in
                    _batched(cfg, events_frame, [*EVENT_COLUMNS, "bad_kind"], batches))

    def gen_profile(batches):
        yield from (_cast(d, USER_PROFILE_SCHEMA) for d in _batched(cfg, profile_frame, PROFILE_COLUMNS, batches))

    def gen_labels(batches):
        yield from (_cast(d, USER_LABELS_SCHEMA) for d in _batched(cfg, labels_frame, LABEL_COLUMNS, batches))

    def gen_rec(batches):
        yield from (_cast(d, _REC_INTERNAL) for d in
                    _batched(cfg, rec_frame, [*REC_COLUMNS, "split_key"], batches))

    rec = ids.mapInPandas(gen_rec, _REC_INTERNAL)
    # Even stratified valid/test split of the eval days: same rule as generator.assign_rec_splits.
    w = Window.partitionBy("event_date", "clicked").orderBy("split_key", "user_id", "item_id")
    eval_rows = (rec.where(F.col("split").isNull())
                 .withColumn("_rn", F.row_number().over(w))
                 .withColumn("split", F.when(F.col("_rn") % 2 == 1, F.lit("valid")).otherwise(F.lit("test")))
                 .drop("_rn"))
    rec = rec.where(F.col("split").isNotNull()).unionByName(eval_rows).select(*REC_COLUMNS)
    events = ids.mapInPandas(gen_events, _EVENTS_INTERNAL)
    if config.source_names:      # the names of a sources config of one's own; bad sources stay as made
        names = F.create_map(*[F.lit(x) for pair in config.source_names.items() for x in pair])
        events = events.withColumn("source", F.coalesce(names[F.col("source")], F.col("source")))
    return {
        "raw_events": events,
        "user_profile": ids.mapInPandas(gen_profile, USER_PROFILE_SCHEMA),
        "user_labels": ids.mapInPandas(gen_labels, USER_LABELS_SCHEMA),
        "rec_impressions": rec,
    }


def _write(df: DataFrame, path: str, table: str, mode: str) -> None:
    writer = df.write.format("delta").mode(mode)
    if PARTITION_COLUMNS.get(table):
        writer = writer.partitionBy(*PARTITION_COLUMNS[table])
    writer.save(path)


def _rows_written(spark: SparkSession, path: str) -> int:
    """numOutputRows of the table's latest commit (the write this call just made)."""
    from delta.tables import DeltaTable

    hist = DeltaTable.forPath(spark, path).history(1).select("operationMetrics").first()
    metrics = hist["operationMetrics"] or {}
    return int(metrics.get("numOutputRows", 0))


def write_world(spark: SparkSession, config: WorldConfig, tables_root: str, *,
                mode: Literal["overwrite", "append"] = "overwrite") -> WorldSummary:
    """Generate the world and write raw_events, user_profile, user_labels and rec_impressions as
    Delta tables at ``f"{tables_root}/{name}"``. Returns rows written per table and the number of
    malformed raw_events rows injected per kind."""
    if mode not in ("overwrite", "append"):
        raise ValueError(f"mode must be 'overwrite' or 'append', got {mode!r}")
    t0 = time.monotonic()
    root = tables_root.rstrip("/")
    summary = WorldSummary(tables_root=root, mode=mode)
    log.info("world: seed=%d users=%d days=%d from %s -> %s (%s)", config.seed, config.n_users, config.n_days,
             config.start_date, root, mode)
    frames = build_frames(spark, config)

    # raw_events: generate once (persisted), count malformed kinds, then write without bad_kind.
    events = frames["raw_events"].persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {r["bad_kind"]: int(r["count"]) for r in events.groupBy("bad_kind").count().collect()}
        summary.malformed_rows = {k: counts.get(k, 0) for k in BAD_ROW_KINDS}
        summary.rows["raw_events"] = sum(counts.values())
        t = time.monotonic()
        _write(events.drop("bad_kind"), f"{root}/raw_events", "raw_events", mode)
        log.info("world: raw_events %d rows (%d malformed %s) in %.1fs", summary.rows["raw_events"],
                 summary.malformed_total, summary.malformed_rows, time.monotonic() - t)
    finally:
        events.unpersist()

    for table in ("user_profile", "user_labels", "rec_impressions"):
        t = time.monotonic()
        path = f"{root}/{table}"
        _write(frames[table], path, table, mode)
        summary.rows[table] = _rows_written(spark, path)
        log.info("world: %s %d rows in %.1fs", table, summary.rows[table], time.monotonic() - t)

    summary.seconds = round(time.monotonic() - t0, 3)
    log.info("world: done in %.1fs: %s", summary.seconds, summary.rows)
    return summary


def write_next_days(spark: SparkSession, config: WorldConfig, tables_root: str, days: int = 1) -> list[str]:
    """The ``days`` dates after ``config``'s last, as the same world extended would generate them
    (the same users, seeds and ``vocabulary_shift``), written into ``raw_events`` (those dates'
    partitions replaced): a world that keeps going, for a night after the others (the demo's).
    Returns the new dates."""
    from datetime import timedelta

    longer = WorldConfig.model_validate({**config.model_dump(), "n_days": config.n_days + days})
    new = [config.start_date + timedelta(days=config.n_days + i) for i in range(days)]
    events = build_frames(spark, longer)["raw_events"].where(F.col("event_date").isin(new)).drop("bad_kind")
    listed = ", ".join(f"DATE'{d.isoformat()}'" for d in new)
    (events.write.format("delta").mode("overwrite").option("replaceWhere", f"event_date IN ({listed})")
     .save(f"{tables_root.rstrip('/')}/raw_events"))
    log.info("world: raw_events of %s written (the world extended by %d day(s))", [d.isoformat() for d in new], days)
    return [d.isoformat() for d in new]
