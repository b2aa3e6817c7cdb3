"""Step 1 of the night: validate the day's ``raw_events`` (bad rows -> ``quarantine`` with a
reason), build one document per active (user, source) and one tabular vector per active user,
spread them over Spark partitions, run encoder + MRQ-VAE in a pandas UDF and write the codes to
``staging_day_tokens`` (the date's partition is replaced).

:func:`stage_dates` does the same for several dates in one pass (one inference job over every
date, the model loaded once per worker): what ``u2qt backfill`` runs; :func:`stage` is its
one-date case.

Nothing is computed twice: the dates' raw rows and the active users' profiles are cached once;
the counts come from one aggregation over the cached rows plus the Delta commit of the staging
write (its files' record counts per date partition: no table is read back).  Once publish has
made a date visible its staged rows are deleted (:func:`clear_published_staging`, retention
``staging.keep_days``)."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines import tables
from pipelines.day_run import DayRun, dates_predicate
from pipelines.documents import build_documents, build_tabular_inputs, profiles_as_of
from pipelines.inference import inference_spec, make_tokenize_udf, row_error_from
from pipelines.validation import profile_rules, raw_event_rules, split_by_rules, to_quarantine
from u2qt_core.errors import U2QTError

log = logging.getLogger(__name__)


class StagingCleared(U2QTError):
    """A published date's staged rows were cleared; publishing it again needs a new stage."""


@dataclass
class StageResult:
    raw_rows: int
    quarantined_rows: int
    active_users: int
    token_rows: int
    seconds: float


def stage(run: DayRun) -> StageResult:
    """Validate, build model inputs, run inference, write ``staging_day_tokens`` for the date."""
    return stage_dates([run])[run.event_date]


def stage_dates(runs: list[DayRun]) -> dict[str, StageResult]:
    """:func:`stage` for the dates of ``runs`` (same settings and tokenizer, one run per date) in
    one pass: the dates' partitions of ``quarantine`` and ``staging_day_tokens`` are replaced
    and each run records its own ``run_metrics`` row. Returns ``{event_date: StageResult}``."""
    started = time.monotonic()
    run = runs[0]
    sources = run.sources
    event_dates = [r.event_date for r in runs]
    predicate = dates_predicate(event_dates)
    run_ids = F.create_map(*[c for r in runs for c in (F.lit(date.fromisoformat(r.event_date)), F.lit(r.run_id))])
    events = run.read("raw_events").where(predicate).persist()
    checked = split_by_rules(events, raw_event_rules(sources))
    valid = checked.valid
    active = valid.select("user_id", "event_date").distinct()
    counts = _event_counts(checked.valid, checked.rejected)

    profiles = profiles_as_of(run.read("user_profile"), active).persist()
    profile_check = split_by_rules(profiles, profile_rules(sources.tabular.features))
    without_profile = active.join(profiles.select("user_id", "event_date"), ["user_id", "event_date"], "left_anti").withColumn(
        "reason", F.concat(F.lit("no user_profile row with as_of <= "), F.col("event_date").cast("string"),
                           F.lit(": tabular tokens skipped"))
    )
    quarantine = (
        to_quarantine(checked.rejected, "raw_events", F.col("event_date"), run_ids[F.col("event_date")])
        .unionByName(to_quarantine(profile_check.rejected, "user_profile", F.col("event_date"), run_ids[F.col("event_date")]))
        .unionByName(to_quarantine(without_profile, "user_profile", F.col("event_date"), run_ids[F.col("event_date")]))
    )
    run.replace_partition(quarantine, tables.QUARANTINE, predicate)

    inputs = (
        build_documents(valid, sources)
        .unionByName(build_tabular_inputs(profile_check.valid, sources))
        .repartition(run.settings.inference.partitions, "user_id")
    )
    tokenize = make_tokenize_udf(inference_spec(
        run.settings, tabular_sources=run.tokenizer.tabular_sources,
        model_dir=run.tokenizer.model_dir, tokenizer_version=run.tokenizer.version,
    ))
    staged = inputs.select(
        "user_id",
        "event_date",
        "source",
        tokenize("user_id", "event_date", "source", "document", "features").alias("codes"),
        F.lit(run.tokenizer.version).alias("tokenizer_version"),
        run_ids[F.col("event_date")].alias("run_id"),
    )
    try:
        run.replace_partition(staged, tables.STAGING_DAY_TOKENS, predicate)
    except Exception as exc:  # a failing row inside the UDF: one line naming user, source, date
        row_error = row_error_from(exc)
        if row_error is None:
            raise
        raise row_error from None

    token_rows = rows_written(run, tables.STAGING_DAY_TOKENS, event_dates)
    raw_rows = {d: c["raw_rows"] for d, c in counts.items()}
    quarantined = {d: c["quarantined_rows"] for d, c in counts.items()}
    active_users = {d: c["active_users"] for d, c in counts.items()}
    events.unpersist()
    profiles.unpersist()
    seconds = (time.monotonic() - started) / len(runs)   # the pass is shared: each date gets its share
    results = {}
    for r in runs:
        d = r.event_date
        results[d] = StageResult(raw_rows=raw_rows.get(d, 0), quarantined_rows=quarantined.get(d, 0),
                                 active_users=active_users.get(d, 0), token_rows=token_rows.get(d, 0), seconds=seconds)
        r.record("stage", "ok", seconds, asdict(results[d]))
        log.info("staged %s: %s", d, results[d])
    return results


def _event_counts(valid: DataFrame, rejected: DataFrame) -> dict[str, dict[str, int]]:
    """Per date: raw rows, quarantined rows and distinct active users, in ONE Spark job (both
    inputs are filters over the same cached rows)."""
    tagged = (valid.select("event_date", "user_id", F.lit(False).alias("bad"))
              .unionByName(rejected.select("event_date", "user_id", F.lit(True).alias("bad"))))
    rows = tagged.groupBy("event_date").agg(
        F.count(F.lit(1)).alias("raw_rows"),
        F.count_if("bad").alias("quarantined_rows"),
        F.count_distinct(F.when(~F.col("bad"), F.col("user_id"))).alias("active_users"),
    ).collect()
    keys = ("raw_rows", "quarantined_rows", "active_users")
    return {str(r["event_date"]): {k: int(r[k] or 0) for k in keys} for r in rows}


def rows_written(run: DayRun, spec: tables.TableSpec, event_dates: list[str]) -> dict[str, int]:
    """Rows per date of the latest ``replaceWhere`` write of these dates to ``spec`` (partitioned
    by ``event_date``), from that commit's added files and their record counts: reads the
    commit's JSON, not the data."""
    from delta.tables import DeltaTable

    path = run.path(spec.name)
    for commit in DeltaTable.forPath(run.spark, path).history(50).collect():
        predicate = (commit["operationParameters"] or {}).get("predicate") or ""
        if commit["operation"] == "WRITE" and event_dates[0] in predicate:
            log_file = f"{path}/_delta_log/{int(commit['version']):020d}.json"
            actions = run.spark.read.json(log_file)
            if "add" not in actions.columns:  # nothing written for these dates
                return {}
            adds = actions.where(F.col("add").isNotNull()).select(
                F.col("add.partitionValues.event_date").alias("event_date"),
                F.get_json_object("add.stats", "$.numRecords").cast("long").alias("n"))
            return {str(r["event_date"]): int(r["n"] or 0)
                    for r in adds.groupBy("event_date").agg(F.sum("n").alias("n")).collect()}
    raise RuntimeError(f"{spec.name}: no write for {event_dates[0]} among its last 50 commits")


def clear_published_staging(run: DayRun) -> int:
    """After ``run``'s date is published: delete the staged rows of published dates older than
    ``staging.keep_days`` days before it (``keep_days: 0``, the default: the date itself).
    Returns the rows deleted.  Dates staged but not yet published (a backfill running beside
    this one) are never touched."""
    from delta.tables import DeltaTable

    keep = run.settings.staging.keep_days
    cutoff = date.fromisoformat(run.event_date) - timedelta(days=keep)
    published = {date.fromisoformat(run.event_date)}
    if keep and tables.table_exists(run.spark, run.path(tables.RUN_METRICS.name)):
        published |= {r["event_date"] for r in run.read("run_metrics")
                      .where("step = 'publish' AND status = 'ok'").select("event_date").distinct().collect()}
    dates = sorted(d for d in published if d <= cutoff)
    if not dates:
        return 0
    table = DeltaTable.forPath(run.spark, run.path(tables.STAGING_DAY_TOKENS.name))
    table.delete(F.col("event_date").isin(dates))
    metrics = table.history(1).collect()[0]["operationMetrics"] or {}
    deleted = int(metrics.get("numDeletedRows", 0))
    log.info("staging_day_tokens: %d rows of published date(s) %s deleted (keep_days=%d)",
             deleted, [d.isoformat() for d in dates], keep)
    return deleted
