"""Table generations: one copy of the code tables per tokenizer version, and an atomic switch.

Codes of two tokenizer versions are never mixed in one table (``u2qt.vocab_version`` pins each).
A *generation* is one copy of the code tables (``settings.GENERATION_TABLES``): the first lives
at ``<tables_root>/<name>`` (id ``""``), a later one at ``<tables_root>/_generations/<version>/``.
The inputs (``raw_events``, ``user_profile``), ``quarantine`` and ``run_metrics`` are shared.

The Delta table ``<tables_root>/table_generations`` is the pointer: an append-only log whose
newest row names the *current* generation, the one analysts' views and the catalog read. A
switch is one appended row, i.e. one Delta commit: a reader sees the old generation or the new
one, never a mix; the old generation's tables stay where they are (readable by path) until
removed by hand.

A night writes into the generation of the tokenizer it resolved: the current one when its
version matches (or when there are no code tables yet), else the generation named after its
version, which ``u2qt retokenize`` fills and switches to (:mod:`pipelines.tokenizer.retokenize`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.lake import tables
from pipelines.config.settings import PipelineSettings

log = logging.getLogger(__name__)

GENERATIONS = tables.TableSpec(
    "table_generations",
    T.StructType([
        T.StructField("generation", T.StringType(), False),
        T.StructField("tokenizer_version", T.StringType(), False),
        T.StructField("dates_from", T.DateType()),
        T.StructField("dates_to", T.DateType()),
        T.StructField("switched_at", T.TimestampType(), False),
    ]),
    description="pointer log: the newest row names the table generation analysts read (one row = one atomic switch)",
)


@dataclass(frozen=True)
class Generation:
    generation: str            # "" = the first generation's folders
    tokenizer_version: str | None


def with_generation(settings: PipelineSettings, generation: str) -> PipelineSettings:
    """The same settings reading and writing ``generation``'s code tables."""
    return settings.model_copy(update={"generation": generation})


def current(spark: SparkSession, settings: PipelineSettings) -> Generation:
    """The generation the pointer names (before any switch: the first one, with its pinned version)."""
    path = settings.table_path(GENERATIONS.name)
    if tables.table_exists(spark, path):
        rows = spark.read.format("delta").load(path).orderBy(F.col("switched_at").desc()).limit(1).collect()
        if rows:
            return Generation(rows[0]["generation"], rows[0]["tokenizer_version"])
    days = with_generation(settings, "").table_path(tables.USER_DAY_TOKENS.name)
    pinned = (tables.table_properties(spark, days).get(tables.TOKENIZER_VERSION_PROPERTY)
              if tables.table_exists(spark, days) else None)
    return Generation("", pinned)


def current_settings(spark: SparkSession, settings: PipelineSettings) -> PipelineSettings:
    """``settings`` on the current generation (what analysts' views read)."""
    return with_generation(settings, current(spark, settings).generation)


def generation_for(spark: SparkSession, settings: PipelineSettings, tokenizer_version: str) -> str:
    """Where a run with ``tokenizer_version`` writes: the current generation if it holds that
    version's codes (or none yet), else the generation named after the version."""
    now = current(spark, settings)
    return now.generation if now.tokenizer_version in (None, tokenizer_version) else tokenizer_version


def switch(spark: SparkSession, settings: PipelineSettings, generation: str, tokenizer_version: str,
           dates: tuple[str, str] | None = None) -> None:
    """Make ``generation`` current: one appended row, one Delta commit."""
    from datetime import date

    tables.ensure_table(spark, settings, GENERATIONS)
    first, last = (date.fromisoformat(dates[0]), date.fromisoformat(dates[1])) if dates else (None, None)
    fields = [f for f in GENERATIONS.schema.fields if f.name != "switched_at"]
    (spark.createDataFrame([(generation, tokenizer_version, first, last)], T.StructType(fields))
        .withColumn("switched_at", F.current_timestamp())
        .write.format("delta").mode("append").save(settings.table_path(GENERATIONS.name)))
    log.info("table generation %r (tokenizer %s) is current", generation, tokenizer_version)


def history(spark: SparkSession, settings: PipelineSettings) -> list[dict]:
    """Every switch, oldest first."""
    path = settings.table_path(GENERATIONS.name)
    if not tables.table_exists(spark, path):
        return []
    return [r.asDict() for r in spark.read.format("delta").load(path).orderBy("switched_at").collect()]
