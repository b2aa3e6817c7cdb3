"""Row-level checks on the night's inputs: every bad row gets a reason and goes to quarantine.

Rules are Spark column expressions evaluated in order; the first that matches names the row's
reason, so each quarantined row carries exactly one, human-readable reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.settings import SourcesConfig, TabularFeature


@dataclass(frozen=True)
class Split:
    """The rows that pass, and the rows that don't with a ``reason`` column."""

    valid: DataFrame
    rejected: DataFrame


def _first_reason(rules: list[tuple[Column, Column]]) -> Column:
    reason = F.lit(None).cast("string")
    for condition, message in reversed(rules):
        reason = F.when(condition, message).otherwise(reason)
    return reason


def split_by_rules(frame: DataFrame, rules: list[tuple[Column, Column]]) -> Split:
    tagged = frame.withColumn("_reason", _first_reason(rules))
    valid = tagged.where(F.col("_reason").isNull()).drop("_reason")
    rejected = tagged.where(F.col("_reason").isNotNull()).withColumnRenamed("_reason", "reason")
    return Split(valid, rejected)


def raw_event_rules(sources: SourcesConfig) -> list[tuple[Column, Column]]:
    """Checks for ``raw_events`` rows (of one day or many)."""
    known = list(sources.text_sources)
    return [
        (F.col("user_id").isNull(), F.lit("user_id is null")),
        (F.col("source").isNull(), F.lit("source is null")),
        (~F.col("source").isin(known),
         F.concat(F.lit("unknown source '"), F.col("source"), F.lit(f"' (known: {', '.join(known)})"))),
        (F.col("text").isNull() | (F.length(F.trim(F.col("text"))) == 0), F.lit("text is empty")),
        (F.col("event_ts").isNull(), F.lit("event_ts is null")),
        (F.col("event_date").isNull(), F.lit("event_date is null")),
        (F.to_date(F.col("event_ts")) != F.col("event_date"),
         F.concat(F.lit("event_ts "), F.col("event_ts").cast("string"), F.lit(" is not on event_date "),
                  F.col("event_date").cast("string"))),
    ]


def profile_rules(features: list[TabularFeature]) -> list[tuple[Column, Column]]:
    """Checks for the ``user_profile`` rows of active users: every feature column present."""
    rules: list[tuple[Column, Column]] = []
    for feature in features:
        column = F.col(feature.column)
        rules.append((column.isNull(), F.lit(f"user_profile.{feature.column} is null")))
        if feature.transform in ("scale", "log1p_scale"):
            rules.append((F.isnan(column.cast("double")),
                          F.lit(f"user_profile.{feature.column} is NaN")))
    return rules


def to_quarantine(rejected: DataFrame, source_table: str, event_date: str | Column, run_id: str | Column) -> DataFrame:
    """Rows in the ``quarantine`` schema: the full original row as JSON, never lost.
    ``event_date`` / ``run_id``: a value, or a column (several dates in one pass)."""
    payload = [c for c in rejected.columns if c != "reason"]
    return rejected.select(
        (event_date if isinstance(event_date, Column) else F.to_date(F.lit(event_date))).alias("event_date"),
        F.lit(source_table).alias("source_table"),
        F.col("reason"),
        F.to_json(F.struct(*[F.col(c) for c in payload]), {"ignoreNullFields": "false"}).alias("row_json"),
        (run_id if isinstance(run_id, Column) else F.lit(run_id)).alias("run_id"),
    )
