"""Step 2 of the night: gates on the staged day (row counts, null/short codes, codes outside
their codebook's range, quarantine rate, collision rate, codebook utilization). Failing gates raise before anything is published; the
metrics are recorded in ``run_metrics`` either way.

On the same cached staged rows it watches the tokenizer age (:mod:`pipelines.night.drift`): the
codes' drift from the training distribution and the quantization fidelity go to ``token_quality``
and a ``drift`` row of ``run_metrics``; drift warns and marks the version due for retraining, it
never stops the night.

:func:`check_quality_dates` computes the metrics of many dates at once (``u2qt backfill``): every
aggregation is grouped by ``event_date``, so N dates cost the same handful of Spark jobs as one,
and their rows are recorded in one ``run_metrics`` commit; :func:`check_quality` is its one-date case."""
from __future__ import annotations

import logging
import time

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.night import drift
from pipelines.night.day_run import DayRun, StepRecord, dates_predicate, day_tuples, record_steps
from pipelines.errors import QualityGateFailed

log = logging.getLogger(__name__)


def collision_rates(tuples: DataFrame) -> dict[str, tuple[int, float]]:
    """Per date of ``tuples`` (:func:`day_tuples`): (active users, share of them whose full token
    tuple is shared with at least one other user that day), in one Spark job."""
    sizes = tuples.groupBy("event_date", "token_tuple").count()
    rows = sizes.groupBy("event_date").agg(
        F.sum("count").alias("users"), F.sum(F.when(F.col("count") > 1, F.col("count")).otherwise(0)).alias("colliding")
    ).collect()
    return {str(r["event_date"]): (int(r["users"]), float(r["colliding"] or 0) / float(r["users"]) if r["users"] else 0.0)
            for r in rows}


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


def level_utilization(run: DayRun, day_tokens: DataFrame) -> dict[str, dict[str, float]]:
    """Per date of ``day_tokens``: share of codes used per codebook (block of K codes), each over
    its own K, in one Spark job for all dates.

    ``shared.1`` over all sources and ``bill.3`` per source; a ``union`` level reports its
    shared block as ``union.1.shared`` (codes in ``[0, K)`` of every source) and each source's
    block as ``union.1.bill`` (that source's codes minus its block start), so no value exceeds 1.
    """
    info = run.tokenizer
    k = info.num_codes
    exploded = day_tokens.select("event_date", "source", F.posexplode("codes").alias("level0", "code"))
    if info.variant == "union":
        shared = F.col("code") < k
    else:
        shared = F.col("level0") < info.shared_prefix_levels
    block = F.when(shared, F.lit("shared")).otherwise(F.col("source"))
    rows = (exploded.groupBy("event_date", block.alias("block"), "level0")
            .agg(F.countDistinct("code").alias("used")).collect())
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        level = r["level0"] + 1
        name = f"union.{level}.{r['block']}" if info.variant == "union" else f"{r['block']}.{level}"
        out.setdefault(str(r["event_date"]), {})[name] = r["used"] / k
    return {d: dict(sorted(values.items())) for d, values in out.items()}


def quality_metrics(runs: list[DayRun]) -> dict[str, dict]:
    """The gate metrics of the staged dates of ``runs`` (same settings and tokenizer), in four
    Spark jobs whatever the number of dates, plus the two of :func:`pipelines.night.drift.measure`
    (which writes ``token_quality``): ``{event_date: metrics}``."""
    run = runs[0]
    dates = [r.event_date for r in runs]
    predicate = dates_predicate(dates)
    staged = run.read("staging_day_tokens").where(predicate).persist()
    L = run.tokenizer.num_levels
    well_formed = F.col("codes").isNotNull() & (F.size("codes") == L)
    per_source = staged.groupBy("event_date", "source").agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_if(~well_formed).alias("bad"),
        F.count_if(F.col("tokenizer_version") != run.tokenizer.version).alias("foreign"),
        F.count_if(well_formed & out_of_range_codes(run)).alias("out_of_range"),
        F.count(F.col("tokens")).alias("documents"),
        F.count_if(F.col("tokens_cut") > 0).alias("documents_truncated"),
        F.sum("tokens").alias("tokens"),
        F.sum("tokens_cut").alias("tokens_cut"),
    ).collect()
    quarantined = (run.read("quarantine").where(predicate).where("source_table = 'raw_events'")
                   .select("event_date", F.lit(0).alias("raw"), F.lit(1).alias("quarantined")))
    inputs = (run.read("raw_events").where(predicate).select("event_date", F.lit(1).alias("raw"), F.lit(0).alias("quarantined"))
              .unionByName(quarantined).groupBy("event_date").agg(F.sum("raw").alias("raw"), F.sum("quarantined").alias("q"))
              .collect())
    valid_codes = staged.where(well_formed & ~out_of_range_codes(run))
    collisions = collision_rates(day_tuples(run, valid_codes))
    utilization = level_utilization(run, valid_codes)
    watched = drift.measure(runs, valid_codes)
    staged.unpersist()
    raw = {str(r["event_date"]): (int(r["raw"]), int(r["q"])) for r in inputs}
    out = {}
    for d in dates:
        rows = [r for r in per_source if str(r["event_date"]) == d]
        token_rows, bad = sum(r["rows"] for r in rows), sum(r["bad"] for r in rows)
        raw_rows, quarantined_rows = raw.get(d, (0, 0))
        active_users, collision_rate = collisions.get(d, (0, 0.0))
        used = utilization.get(d, {})
        out[d] = {
            "raw_rows": raw_rows,
            "quarantined_rows": quarantined_rows,
            "quarantine_rate": quarantined_rows / raw_rows if raw_rows else 0.0,
            "token_rows": token_rows,
            "null_code_rate": bad / token_rows if token_rows else 0.0,
            "foreign_version_rows": sum(r["foreign"] for r in rows),
            "out_of_range_code_rows": sum(r["out_of_range"] for r in rows),
            "active_users": active_users,
            "collision_rate": collision_rate,
            "utilization": used,
            "min_level_utilization": min(used.values()) if used else 0.0,
            "rows_per_source": {r["source"]: r["rows"] for r in rows},
            "truncation": truncation(rows),
            "drift": watched.get(d, {"status": drift.OK}),
        }
    return out


def truncation(rows) -> dict[str, dict]:
    """Per text source of one date's ``per_source`` rows: its documents, the share that
    ``encoder.max_length`` truncated, and the share of their tokens it cut."""
    out = {}
    for r in rows:
        if r["documents"]:
            out[r["source"]] = {"documents": int(r["documents"]), "documents_truncated": int(r["documents_truncated"]),
                                "truncated_share": r["documents_truncated"] / r["documents"],
                                "tokens_cut_share": (r["tokens_cut"] or 0) / r["tokens"] if r["tokens"] else 0.0}
    return out


def truncation_warnings(run: DayRun, metrics: dict) -> list[str]:
    """One line per text source whose truncated share is over ``quality.warn_truncated_share``
    (a warning: the tokens are still published)."""
    limit = run.settings.quality.warn_truncated_share
    return [f"{run.event_date}: {source}: {t['truncated_share']:.1%} of {t['documents']} documents were longer than "
            f"encoder.max_length={run.settings.encoder.max_length} tokens; {t['tokens_cut_share']:.1%} of their tokens "
            "were left out (the rarest lines: a document lists its most frequent lines first). Raise encoder.max_length "
            "(up to the encoder's limit), lower document.max_lines, or use a longer-context encoder"
            for source, t in sorted(metrics.get("truncation", {}).items()) if t["truncated_share"] > limit]


def gate_failures(run: DayRun, metrics: dict) -> list[str]:
    """The gates of ``settings.quality`` that ``metrics`` (of :func:`quality_metrics`) fail, one line each."""
    gates = run.settings.quality
    failures = []
    if metrics["active_users"] < gates.min_active_users:
        failures.append(f"active users {metrics['active_users']} < min_active_users {gates.min_active_users}")
    if metrics["quarantine_rate"] > gates.max_quarantine_rate:
        failures.append(f"quarantine rate {metrics['quarantine_rate']:.4f} > max_quarantine_rate {gates.max_quarantine_rate}")
    if metrics["null_code_rate"] > gates.max_null_code_rate:
        failures.append(f"null/short code rate {metrics['null_code_rate']:.4f} > max_null_code_rate {gates.max_null_code_rate}")
    if metrics["foreign_version_rows"]:
        failures.append(f"{metrics['foreign_version_rows']} staged rows carry another tokenizer version than {run.tokenizer.version}")
    if metrics["out_of_range_code_rows"]:
        failures.append(f"{metrics['out_of_range_code_rows']} staged rows hold codes outside their codebook's range "
                        f"(K={run.tokenizer.num_codes}, variant {run.tokenizer.variant})")
    if metrics["collision_rate"] > gates.max_collision_rate:
        failures.append(f"collision rate {metrics['collision_rate']:.4f} > max_collision_rate {gates.max_collision_rate}")
    if metrics["min_level_utilization"] < gates.min_level_utilization:
        failures.append(f"lowest codebook utilization {metrics['min_level_utilization']:.4f} < min_level_utilization {gates.min_level_utilization}")
    return failures


def check_quality_dates(runs: list[DayRun]) -> tuple[dict[str, dict], QualityGateFailed | None]:
    """Gate the staged dates of ``runs`` in date order, as running them one by one would: the
    dates up to the first that fails are recorded in ``run_metrics`` (one commit), the dates after
    it are not gated. Returns ``({event_date: metrics} of the dates that passed, the failure of
    the first failing date or None)``; the caller publishes the passing dates, then raises it."""
    started = time.monotonic()
    runs = sorted(runs, key=lambda r: r.event_date)
    metrics = quality_metrics(runs)
    seconds = (time.monotonic() - started) / len(runs)   # the jobs are shared: each date gets its share
    passed: dict[str, dict] = {}
    records, failure = [], None
    for run in runs:
        failures = gate_failures(run, metrics[run.event_date])
        for line in truncation_warnings(run, metrics[run.event_date]):
            log.warning(line)
        records.append(StepRecord(run, "quality", "failed" if failures else "ok", seconds,
                                  {**metrics[run.event_date], "failures": failures}))
        watched = metrics[run.event_date]["drift"]
        records.append(StepRecord(run, "drift", watched["status"], 0.0, watched))
        if failures:
            failure = QualityGateFailed(f"{run.event_date}: quality gates failed, nothing published: " + "; ".join(failures))
            break
        passed[run.event_date] = metrics[run.event_date]
        log.info("quality gates passed for %s: %s", run.event_date,
                 {k: metrics[run.event_date][k] for k in ("active_users", "token_rows", "collision_rate", "quarantine_rate")})
    record_steps(records)
    return passed, failure


def check_quality(run: DayRun) -> dict:
    """Compute the staged day's metrics and enforce ``settings.quality``; returns the metrics."""
    passed, failure = check_quality_dates([run])
    if failure is not None:
        raise failure
    return passed[run.event_date]
