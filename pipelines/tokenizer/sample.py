"""The tokenizer's training sample: valid model inputs of a date window, drawn per source by a
seeded hash of (user, date), so the same lake and seed always give the same sample. Training,
the promotion gates, ``check-inputs``' truncation estimate and ``u2qt paper-eval`` all read it."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.config.settings import PipelineSettings
from pipelines.lake import tables
from pipelines.lake.lake import Lake
from pipelines.night.documents import build_documents, build_tabular_inputs, profiles_as_of
from pipelines.night.validation import check_profiles, check_raw_events


def sample_inputs(spark: SparkSession, settings: PipelineSettings, *, start_date: str | None = None,
                  end_date: str | None = None, seed: int = 0, max_per_source: int | None = None) -> DataFrame:
    """Valid model inputs ``(user_id, event_date, source, document, features)``, at most
    ``max_per_source`` (default ``training.max_docs_per_source``; 0: all) per source, sampled by
    a seeded hash."""
    sources = settings.sources_config()
    lake = Lake(spark, settings)      # the inputs: shared by every table generation
    events = lake.read(tables.RAW_EVENTS.name)
    if start_date:
        events = events.where(F.col("event_date") >= F.to_date(F.lit(start_date)))
    if end_date:
        events = events.where(F.col("event_date") <= F.to_date(F.lit(end_date)))
    valid = check_raw_events(events, sources, settings.validation).valid
    documents = build_documents(valid, sources)
    user_days = valid.select("user_id", "event_date").distinct()
    # each day's text with that day's profile (as the night pairs them), not the user's latest
    profiles = profiles_as_of(lake.read(tables.USER_PROFILE.name), user_days)
    tabular = build_tabular_inputs(check_profiles(profiles, sources).valid, sources)
    inputs = documents.unionByName(tabular)
    cap = settings.training.max_docs_per_source if max_per_source is None else max_per_source
    if cap == 0:
        return inputs
    pick = Window.partitionBy("source").orderBy(F.xxhash64("user_id", "event_date", F.lit(seed)))
    return (inputs.withColumn("_n", F.row_number().over(pick))
            .where(F.col("_n") <= cap).drop("_n"))
