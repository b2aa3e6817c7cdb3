"""Step 2 of the night: gates on the staged day (row counts, null/short codes, codes outside
their codebook's range, quarantine rate, collision rate, codebook utilization). Failing gates raise before anything is published; the
metrics are recorded in ``run_metrics`` either way."""
from __future__ import annotations

import logging
import time

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.day_run import DayRun, day_tuples
from u2qt_core.errors import U2QTError

log = logging.getLogger(__name__)


class QualityGateFailed(U2QTError):
    """The staged day failed a quality gate; nothing of it was published."""


def collision_rate(tuples: DataFrame) -> float:
    """Share of users whose full token tuple is shared with at least one other user."""
    sizes = tuples.groupBy("token_tuple").count()
    row = sizes.agg(
        F.sum("count").alias("users"), F.sum(F.when(F.col("count") > 1, F.col("count")).otherwise(0)).alias("colliding")
    ).first()
    return float(row["colliding"] or 0) / float(row["users"]) if row and row["users"] else 0.0


def _union_block_start(run: DayRun) -> Column:
    """Per row: the first code of its source's own block in a union table, ``K * (1 + i)``."""
    k = run.tokenizer.num_codes
    starts = [item for i, s in enumerate(run.tokenizer.sources) for item in (F.lit(s), F.lit(k * (1 + i)))]
    return F.create_map(*starts)[F.col("source")]


def out_of_range_codes(run: DayRun) -> Column:
    """True for a row holding a code its source cannot emit at that level: outside ``[0, K)``,
    or for ``union`` outside both the shared block ``[0, K)`` and the source's block."""
    k = run.tokenizer.num_codes
    if run.tokenizer.variant == "union":
        own = _union_block_start(run)
        return F.exists("codes", lambda c: ~(((c >= 0) & (c < k)) | (own.isNotNull() & (c >= own) & (c < own + k))))
    return F.exists("codes", lambda c: (c < 0) | (c >= k))


def level_utilization(run: DayRun, day_tokens: DataFrame) -> dict[str, float]:
    """Share of codes used per codebook (block of K codes) that day, each over its own K.

    ``shared.1`` over all sources and ``bill.3`` per source; a ``union`` level reports its
    shared block as ``union.1.shared`` (codes in ``[0, K)`` of every source) and each source's
    block as ``union.1.bill`` (that source's codes minus its block start), so no value exceeds 1.
    """
    info = run.tokenizer
    k = info.num_codes
    exploded = day_tokens.select("source", F.posexplode("codes").alias("level0", "code"))
    if info.variant == "union":
        exploded = exploded.withColumn("_shared", F.col("code") < k)
        shared = exploded.where("_shared").groupBy("level0").agg(F.countDistinct("code").alias("used")).collect()
        own = (exploded.where(~F.col("_shared")).groupBy("source", "level0")
               .agg(F.countDistinct("code").alias("used")).collect())
        out = {f"union.{r['level0'] + 1}.shared": r["used"] / k for r in shared}
        out.update({f"union.{r['level0'] + 1}.{r['source']}": r["used"] / k for r in own})
        return dict(sorted(out.items()))
    shared = (exploded.where(F.col("level0") < info.shared_prefix_levels)
              .groupBy("level0").agg(F.countDistinct("code").alias("used")).collect())
    specific = (exploded.where(F.col("level0") >= info.shared_prefix_levels)
                .groupBy("source", "level0").agg(F.countDistinct("code").alias("used")).collect())
    out = {f"shared.{r['level0'] + 1}": r["used"] / k for r in shared}
    out.update({f"{r['source']}.{r['level0'] + 1}": r["used"] / k for r in specific})
    return dict(sorted(out.items()))


def check_quality(run: DayRun) -> dict:
    """Compute the staged day's metrics and enforce ``settings.quality``; returns the metrics."""
    started = time.monotonic()
    gates = run.settings.quality
    staged = run.read("staging_day_tokens").where(run.date_predicate).persist()
    L = run.tokenizer.num_levels
    well_formed_col = F.col("codes").isNotNull() & (F.size("codes") == L)
    # one Spark job for the four counts of the staged rows (each was its own job: per-date fixed cost)
    counts = staged.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(F.col("codes").isNull() | (F.size("codes") != L), 1).otherwise(0)).alias("bad"),
        F.sum(F.when(F.col("tokenizer_version") != run.tokenizer.version, 1).otherwise(0)).alias("foreign"),
        F.sum(F.when(well_formed_col & out_of_range_codes(run), 1).otherwise(0)).alias("out_of_range"),
    ).first()
    token_rows, bad_codes = int(counts["rows"]), int(counts["bad"] or 0)
    foreign, out_of_range = int(counts["foreign"] or 0), int(counts["out_of_range"] or 0)
    raw_rows = run.read("raw_events").where(run.date_predicate).count()
    quarantined = run.read("quarantine").where(run.date_predicate).where("source_table = 'raw_events'").count()
    well_formed = staged.where(well_formed_col)
    valid_codes = well_formed.where(~out_of_range_codes(run))
    tuples = day_tuples(run, valid_codes)
    utilization = level_utilization(run, valid_codes)
    metrics = {
        "raw_rows": raw_rows,
        "quarantined_rows": quarantined,
        "quarantine_rate": quarantined / raw_rows if raw_rows else 0.0,
        "token_rows": token_rows,
        "null_code_rate": bad_codes / token_rows if token_rows else 0.0,
        "foreign_version_rows": foreign,
        "out_of_range_code_rows": out_of_range,
        "active_users": tuples.count(),
        "collision_rate": collision_rate(tuples),
        "utilization": utilization,
        "min_level_utilization": min(utilization.values()) if utilization else 0.0,
        "rows_per_source": {r["source"]: r["count"] for r in staged.groupBy("source").count().collect()},
    }
    staged.unpersist()
    failures = []
    if metrics["active_users"] < gates.min_active_users:
        failures.append(f"active users {metrics['active_users']} < min_active_users {gates.min_active_users}")
    if metrics["quarantine_rate"] > gates.max_quarantine_rate:
        failures.append(f"quarantine rate {metrics['quarantine_rate']:.4f} > max_quarantine_rate {gates.max_quarantine_rate}")
    if metrics["null_code_rate"] > gates.max_null_code_rate:
        failures.append(f"null/short code rate {metrics['null_code_rate']:.4f} > max_null_code_rate {gates.max_null_code_rate}")
    if foreign:
        failures.append(f"{foreign} staged rows carry another tokenizer version than {run.tokenizer.version}")
    if out_of_range:
        failures.append(f"{out_of_range} staged rows hold codes outside their codebook's range "
                        f"(K={run.tokenizer.num_codes}, variant {run.tokenizer.variant})")
    if metrics["collision_rate"] > gates.max_collision_rate:
        failures.append(f"collision rate {metrics['collision_rate']:.4f} > max_collision_rate {gates.max_collision_rate}")
    if metrics["min_level_utilization"] < gates.min_level_utilization:
        failures.append(f"lowest codebook utilization {metrics['min_level_utilization']:.4f} < min_level_utilization {gates.min_level_utilization}")
    seconds = time.monotonic() - started
    run.record("quality", "failed" if failures else "ok", seconds, {**metrics, "failures": failures})
    if failures:
        raise QualityGateFailed(f"{run.event_date}: quality gates failed, nothing published: " + "; ".join(failures))
    log.info("quality gates passed for %s: %s", run.event_date, {k: metrics[k] for k in ("active_users", "token_rows", "collision_rate", "quarantine_rate")})
    return metrics
