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
(:func:`pipelines.night.history_publish.publish_day_tokens`; a backfill its dates' partitions, in one commit): its cost follows the day's active rows, not history length nor
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
from typing import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipelines.lake import tables
from pipelines.lake.lake import Lake
from pipelines.runtime.local_rows import rows_frame

log = logging.getLogger(__name__)

EPOCH = date(1970, 1, 1)


def period_start(day: date, period_days: int) -> date:
    """First day of the compaction period holding ``day`` (periods aligned to 1970-01-01)."""
    return day - timedelta(days=(day - EPOCH).days % period_days)


def covered_periods(lake: Lake) -> dict[date, date]:
    """``{period_start: covered_through}`` of the compacted periods (a small control table)."""
    if not lake.exists(tables.HISTORY_PERIODS.name):
        return {}
    rows = lake.read(tables.HISTORY_PERIODS.name).collect()
    return {r["period_start"]: r["covered_through"] for r in rows}


def _newest_date(days: DataFrame) -> date | None:
    return days.agg(F.max("event_date")).first()[0]


def history_select(max_days: int, table: Callable[[str], str], cutoff: date | None = None,
                   with_base: bool = True) -> str:
    """The one definition of the ``user_token_history`` view, as a SELECT over the tables.

    ``table(name)`` names each table (``delta.`<path>``` for :func:`read_history`,
    ``u2qt.<name>`` for the permanent view of :mod:`pipelines.lake.catalog`). ``cutoff`` (the oldest
    date kept) is a literal when the caller knows the newest date (partition pruning on
    ``event_date``), else a scalar subquery, so a permanent view follows every new night.
    ``with_base=False`` leaves the compacted base out (its tables do not exist yet)."""
    days = table(tables.USER_DAY_TOKENS.name)
    first_kept = (f"DATE'{cutoff.isoformat()}'" if cutoff is not None
                  else f"(SELECT date_sub(max(event_date), {max_days - 1}) FROM {days})")
    if with_base:
        periods_cte = f"""periods AS (
            SELECT period_start, covered_through FROM {table(tables.HISTORY_PERIODS.name)}
            WHERE covered_through >= {first_kept}),"""
        uncovered = "LEFT ANTI JOIN periods p ON d.event_date BETWEEN p.period_start AND p.covered_through"
        base = f"""UNION ALL
            SELECT b.user_id, b.source, named_struct('first', b.dates[0], 'dates', b.dates, 'tokens', b.tokens,
                   'tokenizer_version', b.tokenizer_version, 'written_at', b.compacted_at) AS piece
            FROM {table(tables.HISTORY_BASE.name)} b LEFT SEMI JOIN periods p ON b.period_start = p.period_start"""
    else:
        periods_cte, uncovered, base = "", "", ""
    return f"""
        WITH {periods_cte}
        pieces AS (
            SELECT d.user_id, d.source, named_struct('first', d.event_date, 'dates', array(d.event_date),
                   'tokens', d.codes, 'tokenizer_version', d.tokenizer_version,
                   'written_at', d._metadata.file_modification_time) AS piece
            FROM {days} d {uncovered}
            WHERE d.event_date >= {first_kept}
            {base}),
        entries AS (
            SELECT user_id, source, flatten(transform(p, x -> x.dates)) AS all_dates,
                   flatten(transform(p, x -> x.tokens)) AS all_tokens,
                   element_at(p, -1).tokenizer_version AS tokenizer_version,
                   array_max(transform(p, x -> x.written_at)) AS updated_at
            FROM (SELECT user_id, source, array_sort(collect_list(piece)) AS p FROM pieces GROUP BY user_id, source)),
        counted AS (   -- dates are sorted: the expired ones are a prefix
            SELECT *, CAST(size(all_tokens) / size(all_dates) AS INT) AS tokens_per_day,
                   size(filter(all_dates, x -> x < k.cutoff)) AS expired
            FROM entries CROSS JOIN (SELECT {first_kept} AS cutoff) k)   -- no subquery inside a lambda
        SELECT user_id, source, slice(all_dates, expired + 1, size(all_dates) - expired) AS dates,
               slice(all_tokens, expired * tokens_per_day + 1, (size(all_dates) - expired) * tokens_per_day) AS tokens,
               tokens_per_day, CAST(size(all_dates) - expired AS INT) AS n_days,
               element_at(all_dates, -1) AS last_date, tokenizer_version, updated_at
        FROM counted WHERE size(all_dates) > expired"""


def read_history(lake: Lake) -> DataFrame:
    """The ``user_token_history`` view (columns of :data:`tables.USER_TOKEN_HISTORY`):
    :func:`history_select` over the path-based tables of ``lake``, with the cutoff as a literal."""
    spark, spec, max_days = lake.spark, tables.USER_TOKEN_HISTORY, lake.settings.history.max_days
    if not lake.exists(tables.USER_DAY_TOKENS.name):
        return rows_frame(spark, [], spec.schema)
    newest = _newest_date(lake.read(tables.USER_DAY_TOKENS.name))
    if newest is None:
        return rows_frame(spark, [], spec.schema)
    with_base = all(lake.exists(s.name) for s in (tables.HISTORY_BASE, tables.HISTORY_PERIODS))
    cutoff = newest - timedelta(days=max_days - 1)
    return spark.sql(history_select(max_days, lambda name: f"delta.`{lake.path(name)}`", cutoff, with_base))


def compact_history(lake: Lake) -> dict:
    """Write every closed period that the base does not cover exactly, drop expired periods.

    A period is closed once the newest published date reaches its last day; it is written once
    (``replaceWhere period_start = P``) and again only after one of its dates was re-published.
    Returns ``{"compacted": [period starts], "expired": [...], "newest_date": ...}``."""
    from delta.tables import DeltaTable
    from tqdm import tqdm

    spark, history = lake.spark, lake.settings.history
    out: dict = {"compacted": [], "expired": [], "newest_date": None}
    if not lake.exists(tables.USER_DAY_TOKENS.name):
        return out
    days = lake.read(tables.USER_DAY_TOKENS.name)
    dates = sorted(r["event_date"] for r in days.select("event_date").distinct().collect())
    if not dates:
        return out
    version = lake.properties(tables.USER_DAY_TOKENS.name).get(tables.TOKENIZER_VERSION_PROPERTY)
    base_path = lake.ensure(tables.HISTORY_BASE, version)
    periods_path = lake.ensure(tables.HISTORY_PERIODS)
    P, newest = history.period_days, dates[-1]
    cutoff = newest - timedelta(days=history.max_days - 1)
    last_in_period: dict[date, date] = {}
    for day in dates:
        last_in_period[period_start(day, P)] = day
    covered = covered_periods(lake)
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
        marker = rows_frame(spark, [(start, last_in_period[start])],
                            StructType.fromDDL("period_start date, covered_through date"))
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
