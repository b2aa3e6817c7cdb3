"""Schemas of the input tables, defined once: ``raw_events``, ``user_profile`` (read by the night)
and ``user_labels``, ``rec_impressions`` (read by the evaluation).

The table catalogue (:mod:`pipelines.lake.tables`), the synthetic-world writer
(:mod:`pipelines.world.writer`) and the generator's column order
(:mod:`pipelines.world.generator`) all take them from here.  Every column is nullable: the
night's validation (:mod:`pipelines.night.validation`) quarantines rows with missing values instead of
failing the write.
"""
from __future__ import annotations

from pyspark.sql import types as T

__all__ = ["RAW_EVENTS_SCHEMA", "USER_PROFILE_SCHEMA", "USER_LABELS_SCHEMA", "REC_IMPRESSIONS_SCHEMA",
           "INPUT_SCHEMAS"]

RAW_EVENTS_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType()),
    T.StructField("event_ts", T.TimestampType()),
    T.StructField("event_date", T.DateType()),
    T.StructField("source", T.StringType()),
    T.StructField("text", T.StringType()),
    T.StructField("amount", T.DoubleType()),
    T.StructField("status", T.StringType()),
])

USER_PROFILE_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType()),
    T.StructField("as_of", T.DateType()),
    T.StructField("age", T.IntegerType()),
    T.StructField("gender", T.StringType()),
    T.StructField("city_tier", T.IntegerType()),
    T.StructField("account_age_days", T.IntegerType()),
    T.StructField("num_cards", T.IntegerType()),
    T.StructField("avg_balance", T.DoubleType()),
    T.StructField("credit_score", T.IntegerType()),
    T.StructField("device_os", T.StringType()),
    T.StructField("is_merchant", T.BooleanType()),
    T.StructField("engagement", T.DoubleType()),
])

USER_LABELS_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType()),
    T.StructField("task", T.StringType()),
    T.StructField("label", T.IntegerType()),
    T.StructField("label_window_start", T.DateType()),
    T.StructField("label_window_end", T.DateType()),
])

REC_IMPRESSIONS_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType()),
    T.StructField("item_id", T.LongType()),
    T.StructField("item_category", T.StringType()),
    T.StructField("event_date", T.DateType()),
    T.StructField("clicked", T.IntegerType()),
    T.StructField("split", T.StringType()),
])

#: Input table name -> schema, in the order the world writer writes them.
INPUT_SCHEMAS: dict[str, T.StructType] = {
    "raw_events": RAW_EVENTS_SCHEMA,
    "user_profile": USER_PROFILE_SCHEMA,
    "user_labels": USER_LABELS_SCHEMA,
    "rec_impressions": REC_IMPRESSIONS_SCHEMA,
}
