"""Token history: ``user_day_tokens`` is the source of truth, ``user_token_history`` a view over it.

The view has one row per (user, source) with that source's per-day entries in date order
(``dates``, ``tokens`` = ``tokens_per_day`` codes per date), keeping the days within
``history.max_days`` of the newest published date. It is assembled from two kinds of pieces:

* compacted periods: ``user_token_history_base`` holds, per period of ``history.period_days`` days
  (aligned to 1970-01-01) and (user, source), the days of that period as arrays; the control table
  ``user_token_history_periods`` says which days each compacted period covers
  (``[period_start, covered_through]``). :func:`compact_history` (``u2qt maintain``) writes a
  period once it is closed, replacing only that period's partition;
* every day of ``user_day_tokens`` that no compacted period covers (the open period, and any
  period whose date was re-published after it was compacted).

The night therefore writes only the day's partition of ``user_day_tokens``
(:func:`publish_day_tokens`): its cost follows the day's active rows, not history length nor
inactive users, and the history always equals what the fact table holds, because a re-published
date that a compacted period covered first removes that period from the control table (the view
then reads those days from ``user_day_tokens`` until the next compaction).

Growth (A = active (user, source) rows per day, U = users with history, H = days of history):
night O(A); compaction O(A x period_days) per period, once, i.e. O(A) per day amortised;
reading the view O(U x H) entries in at most H / period_days + period_days pieces per row.
"""
from __future__ import annotations

import logging
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines import tables
from pipelines.day_run import DayRun
from pipelines.settings import PipelineSettings

log = logging.getLogger(__name__)

EPOCH = date(1970, 1, 1)


def period_start(day: date, period_days: int) -> date:
    """First day of the compaction period holding ``day`` (periods aligned to 1970-01-01)."""
    return day - timedelta(days=(day - EPOCH).days % period_days)


def publish_day_tokens(run: DayRun, day_tokens: DataFrame) -> int:
    """Replace the date's partition of ``user_day_tokens`` with ``day_tokens`` when it differs.

    Returns the number of (user, source) entries of the date that were added, removed or changed
    (0 on a re-run of unchanged input: then nothing is written). A date inside a compacted
    period first drops that period's coverage, so the view never serves stale compacted entries
    (a crash between the two writes leaves the view reading ``user_day_tokens``: still exact)."""
    spark, settings = run.spark, run.settings
    tables.ensure_table(spark, settings, tables.USER_DAY_TOKENS, run.tokenizer.version)
    key = ["user_id", "source"]
    old = run.read(tables.USER_DAY_TOKENS.name).where(run.date_predicate).select(
        *key, F.col("codes").alias("old_codes"), F.col("tokenizer_version").alias("old_version"))
    new = day_tokens.select(*key, "codes", "tokenizer_version")
    changed = (new.join(old, key, "full_outer")
               .where(~F.col("codes").eqNullSafe(F.col("old_codes"))
                      | ~F.col("tokenizer_version").eqNullSafe(F.col("old_version")))
               .count())
    if changed == 0:
        log.info("history: user_day_tokens already holds %s exactly: nothing written", run.event_date)
        return 0
    _uncover(spark, settings, date.fromisoformat(run.event_date))
    run.replace_partition(day_tokens, tables.USER_DAY_TOKENS)
    log.info("history: %s: %d (user, source) entries added, removed or changed", run.event_date, changed)
    return changed


def _uncover(spark: SparkSession, settings: PipelineSettings, day: date) -> None:
    """Remove the coverage of the compacted period holding ``day`` if it covers ``day``."""
    from delta.tables import DeltaTable

    path = settings.table_path(tables.HISTORY_PERIODS.name)
    if not tables.table_exists(spark, path):
        return
    start = period_start(day, settings.history.period_days)
    condition = f"period_start = DATE'{start}' AND covered_through >= DATE'{day}'"
    if spark.read.format("delta").load(path).where(condition).limit(1).count():
        DeltaTable.forPath(spark, path).delete(condition)
        log.info("history: %s was re-published inside compacted period %s: the view reads it from "
                 "user_day_tokens until `u2qt maintain` compacts it again", day, start)


def covered_periods(spark: SparkSession, settings: PipelineSettings) -> dict[date, date]:
    """``{period_start: covered_through}`` of the compacted periods (a small control table)."""
    path = settings.table_path(tables.HISTORY_PERIODS.name)
    if not tables.table_exists(spark, path):
        return {}
    rows = spark.read.format("delta").load(path).collect()
    return {r["period_start"]: r["covered_through"] for r in rows}


def _newest_date(days: DataFrame) -> date | None:
    return days.agg(F.max("event_date")).first()[0]


def _not_covered(covered: dict[date, date]) -> Column:
    condition = F.lit(True)
    for start, through in covered.items():
        condition = condition & ~F.col("event_date").between(F.lit(start), F.lit(through))
    return condition


def read_history(spark: SparkSession, settings: PipelineSettings) -> DataFrame:
    """The ``user_token_history`` view (columns of :data:`tables.USER_TOKEN_HISTORY`)."""
    spec = tables.USER_TOKEN_HISTORY
    days_path = settings.table_path(tables.USER_DAY_TOKENS.name)
    if not tables.table_exists(spark, days_path):
        return spark.createDataFrame([], spec.schema)
    days = spark.read.format("delta").load(days_path)
    newest = _newest_date(days)
    if newest is None:
        return spark.createDataFrame([], spec.schema)
    cutoff = newest - timedelta(days=settings.history.max_days - 1)
    last_needed = {start: through for start, through in covered_periods(spark, settings).items() if through >= cutoff}
    pieces = (days.where(F.col("event_date") >= F.lit(cutoff)).where(_not_covered(last_needed))
              .select("user_id", "source", F.struct(
                  F.col("event_date").alias("first"), F.array("event_date").alias("dates"),
                  F.col("codes").alias("tokens"), "tokenizer_version",
                  F.col("_metadata.file_modification_time").alias("written_at")).alias("piece")))
    base_path = settings.table_path(tables.HISTORY_BASE.name)
    if last_needed and tables.table_exists(spark, base_path):
        base = (spark.read.format("delta").load(base_path)
                .where(F.col("period_start").isin([F.lit(s) for s in last_needed]))
                .select("user_id", "source", F.struct(
                    F.col("dates")[0].alias("first"), "dates", "tokens", "tokenizer_version",
                    F.col("compacted_at").alias("written_at")).alias("piece")))
        pieces = pieces.unionByName(base)
    grouped = pieces.groupBy("user_id", "source").agg(F.array_sort(F.collect_list("piece")).alias("p"))
    all_dates = F.flatten(F.transform("p", lambda x: x["dates"]))
    all_tokens = F.flatten(F.transform("p", lambda x: x["tokens"]))
    entries = grouped.select(
        "user_id", "source", all_dates.alias("all_dates"), all_tokens.alias("all_tokens"),
        F.element_at("p", -1)["tokenizer_version"].alias("tokenizer_version"),
        F.array_max(F.transform("p", lambda x: x["written_at"])).alias("updated_at"))
    expired = F.size(F.filter("all_dates", lambda d: d < F.lit(cutoff)))    # dates are sorted: a prefix
    per_day = (F.size("all_tokens") / F.size("all_dates")).cast("int")
    kept = F.size("all_dates") - expired
    return (entries
            .withColumn("tokens_per_day", per_day).withColumn("_expired", expired).withColumn("n_days", kept.cast("int"))
            .where(F.col("n_days") > 0)
            .select(
                "user_id", "source",
                F.slice("all_dates", F.col("_expired") + 1, F.col("n_days")).alias("dates"),
                F.slice("all_tokens", F.col("_expired") * F.col("tokens_per_day") + 1,
                        F.col("n_days") * F.col("tokens_per_day")).alias("tokens"),
                "tokens_per_day", "n_days", F.element_at("all_dates", -1).alias("last_date"),
                "tokenizer_version", "updated_at"))


def compact_history(spark: SparkSession, settings: PipelineSettings) -> dict:
    """Write every closed period that the base does not cover exactly, drop expired periods.

    A period is closed once the newest published date reaches its last day; it is written once
    (``replaceWhere period_start = P``) and again only after one of its dates was re-published.
    Returns ``{"compacted": [period starts], "expired": [...], "newest_date": ...}``."""
    from delta.tables import DeltaTable
    from tqdm import tqdm

    days_path = settings.table_path(tables.USER_DAY_TOKENS.name)
    out: dict = {"compacted": [], "expired": [], "newest_date": None}
    if not tables.table_exists(spark, days_path):
        return out
    days = spark.read.format("delta").load(days_path)
    dates = sorted(r["event_date"] for r in days.select("event_date").distinct().collect())
    if not dates:
        return out
    version = tables.table_properties(spark, days_path).get(tables.TOKENIZER_VERSION_PROPERTY)
    base_path = tables.ensure_table(spark, settings, tables.HISTORY_BASE, version)
    periods_path = tables.ensure_table(spark, settings, tables.HISTORY_PERIODS)
    P, newest = settings.history.period_days, dates[-1]
    cutoff = newest - timedelta(days=settings.history.max_days - 1)
    last_in_period: dict[date, date] = {}
    for day in dates:
        last_in_period[period_start(day, P)] = day
    covered = covered_periods(spark, settings)
    todo = [start for start, last in sorted(last_in_period.items())
            if start + timedelta(days=P - 1) <= newest and start + timedelta(days=P - 1) >= cutoff
            and covered.get(start) != last]
    for start in tqdm(todo, desc="compact history periods", unit="period", disable=not todo):
        end = start + timedelta(days=P - 1)
        rows = (days.where(F.col("event_date").between(F.lit(start), F.lit(end)))
                .groupBy("user_id", "source")
                .agg(F.array_sort(F.collect_list(F.struct("event_date", "codes"))).alias("e"),
                     F.max("tokenizer_version").alias("tokenizer_version"))
                .select(F.lit(start).alias("period_start"), "user_id", "source",
                        F.transform("e", lambda x: x["event_date"]).alias("dates"),
                        F.flatten(F.transform("e", lambda x: x["codes"])).alias("tokens"),
                        "tokenizer_version", F.current_timestamp().alias("compacted_at")))
        (rows.write.format("delta").mode("overwrite")
             .option("replaceWhere", f"period_start = DATE'{start}'").save(base_path))
        marker = spark.createDataFrame([(start, last_in_period[start])], "period_start date, covered_through date")
        (DeltaTable.forPath(spark, periods_path).alias("t")
            .merge(marker.withColumn("compacted_at", F.current_timestamp()).alias("s"), "t.period_start = s.period_start")
            .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
        out["compacted"].append(start.isoformat())
    expired = sorted(s for s in covered if s + timedelta(days=P - 1) < cutoff)
    if expired:
        first_kept = (period_start(cutoff, P)).isoformat()
        DeltaTable.forPath(spark, periods_path).delete(f"period_start < DATE'{first_kept}'")
        DeltaTable.forPath(spark, base_path).delete(f"period_start < DATE'{first_kept}'")
        out["expired"] = [s.isoformat() for s in expired]
    out["newest_date"] = newest.isoformat()
    log.info("history compaction: %d period(s) written, %d expired (newest date %s)",
             len(out["compacted"]), len(out["expired"]), newest)
    return out
