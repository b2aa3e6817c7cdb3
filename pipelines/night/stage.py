"""Step 1 of the night: validate the day's ``raw_events`` (bad rows -> ``quarantine`` with a
reason), build one document per active (user, source) and one tabular vector per active user,
spread them over Spark partitions, run encoder + MRQ-VAE in a pandas UDF -- once per distinct
(source, document) of the pass with ``inference.dedup_documents`` (:mod:`pipelines.night.dedup`);
for a U²QT-AAAI tokenizer once per user-day, its sources together (:mod:`pipelines.night.u2qt_inference`)
-- and write the codes to ``staging_day_tokens`` (the date's partition is replaced).

:func:`stage_dates` does the same for several dates in one pass (one inference job over every
date, the model loaded once per worker): what ``u2qt backfill`` runs; :func:`stage` is its
one-date case.

Nothing is computed twice: the dates' raw rows and the active users' profiles are cached once;
the counts come from one aggregation over the cached rows plus the Delta commit of the staging
write (its files' record counts per date partition: no table is read back).  Once publish has
made a date visible and recorded it, its staged rows are deleted (:mod:`pipelines.night.publish`,
retention ``staging.keep_days``)."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipelines.lake import tables
from pipelines.night.day_run import DayRun, StepRecord, dates_predicate, record_failure, record_steps
from pipelines.night.documents import build_documents, build_tabular_inputs, document_cuts, profiles_as_of
from pipelines.night.dedup import tokenize_inputs
from pipelines.night.inference import inference_spec, make_tokenize_udf, worker_error_from
from pipelines.night.u2qt_inference import make_user_day_udf, tokenize_user_days
from u2qt_core.numeric_path import parse_path
from pipelines.runtime.local_rows import rows_frame
from pipelines.runtime.progress import spark_progress
from pipelines.night.validation import Split, check_profiles, check_raw_events, to_quarantine

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    raw_rows: int
    quarantined_rows: int      # raw_events rows quarantined (duplicate copies included)
    active_users: int
    token_rows: int
    seconds: float
    duplicate_rows: int = 0    # extra copies of exact duplicate raw_events rows (quarantined)
    documents_cut: int = 0     # documents over document.max_lines distinct lines
    lines_cut: int = 0         # the distinct lines those documents left out
    cuts_by_source: dict = field(default_factory=dict)   # {source: {documents_cut, lines_cut}}
    documents: int = 0           # text (user, source) documents staged for the date
    documents_embedded: int = 0  # of them, rows the encoder embedded (inference.dedup_documents folds
                                 # repeats; a folded document counts on the earliest date holding it)


def stage(run: DayRun) -> StageResult:
    """Validate, build model inputs, run inference, write ``staging_day_tokens`` for the date."""
    return stage_dates([run])[run.event_date]


def stage_dates(runs: list[DayRun]) -> dict[str, StageResult]:
    """:func:`stage` for the dates of ``runs`` (same settings and tokenizer, one run per date) in
    one pass: the dates' partitions of ``quarantine`` and ``staging_day_tokens`` are replaced
    and each run records its own ``run_metrics`` row. Returns ``{event_date: StageResult}``.

    First, before any read or inference, the tables holding codes are checked against the run's
    tokenizer version. A stage that fails records ``status = failed`` with the error (one line,
    in ``metrics_json``) for each of its dates, then re-raises."""
    started = time.monotonic()
    try:
        runs[0].lake.check_versions(runs[0].tokenizer.version)
        return _stage_dates(runs, started)
    except Exception as exc:
        record_failure(runs, "stage", started, exc)
        raise


def _stage_dates(runs: list[DayRun], started: float) -> dict[str, StageResult]:
    run = runs[0]
    event_dates = [r.event_date for r in runs]
    checked = check_raw_events(night_events(run.read("raw_events"), event_dates), run.sources, run.settings.validation,
                               cache=True)
    active = checked.valid.drop(NIGHT).select("user_id", "event_date").distinct()
    profiles = profiles_as_of(run.read("user_profile"), active).persist()
    try:   # the caches are freed on the error path too
        return _stage_checked(runs, started, checked, active, profiles)
    finally:
        checked.release()
        profiles.unpersist()


def _stage_checked(runs: list[DayRun], started: float, checked: Split, active: DataFrame,
                   profiles: DataFrame) -> dict[str, StageResult]:
    """The pass of :func:`stage_dates` over the night's checked ``raw_events`` rows, its active
    ``(user_id, event_date)`` pairs and their profiles as of each date (``checked`` and ``profiles``
    persisted by :func:`_stage_dates`, which frees them)."""
    run = runs[0]
    sources = run.sources
    event_dates = [r.event_date for r in runs]
    predicate = dates_predicate(event_dates)
    run_ids = F.create_map(*[c for r in runs for c in (F.lit(date.fromisoformat(r.event_date)), F.lit(r.run_id))])
    valid = checked.valid.drop(NIGHT)
    counts = _event_counts(checked.valid, checked.rejected)
    cuts = document_cuts(checked.valid, sources, night=NIGHT)

    profile_check = check_profiles(profiles, sources)
    without_profile = active.join(profiles.select("user_id", "event_date"), ["user_id", "event_date"], "left_anti").withColumn(
        "reason", F.concat(F.lit("no user_profile row with as_of <= "), F.col("event_date").cast("string"),
                           F.lit(": tabular tokens skipped"))
    )
    quarantine = (
        to_quarantine(checked.rejected, "raw_events", F.col(NIGHT), run_ids[F.col(NIGHT)])
        .unionByName(to_quarantine(profile_check.rejected, "user_profile", F.col("event_date"), run_ids[F.col("event_date")]))
        .unionByName(to_quarantine(without_profile, "user_profile", F.col("event_date"), run_ids[F.col("event_date")]))
    )
    run.replace_partition(quarantine, tables.QUARANTINE, predicate)

    spec = inference_spec(
        run.settings, tabular_sources=run.tokenizer.tabular_sources,
        model_dir=run.tokenizer.model_dir, tokenizer_version=run.tokenizer.version,
        # the path load_tokenizer_info accepted for this version (planned again when absent)
        numeric_path=parse_path(run.tokenizer.numeric_path) if run.tokenizer.numeric_path else None,
    )
    documents, tabular = build_documents(valid, sources), build_tabular_inputs(profile_check.valid, sources)
    if run.tokenizer.architecture == "u2qt_aaai":   # a user-day's sources together: the Q-Former reads across them
        tokenized = tokenize_user_days(documents, tabular, make_user_day_udf(spec),
                                       partitions=run.settings.inference.partitions)
    else:
        tokenized = tokenize_inputs(documents, tabular, make_tokenize_udf(spec),
                                    partitions=run.settings.inference.partitions,
                                    dedup=run.settings.inference.dedup_documents)
    staged = tokenized.rows.select(
        "user_id",
        "event_date",
        "source",
        F.col("_out.codes").alias("codes"),
        F.lit(run.tokenizer.version).alias("tokenizer_version"),
        run_ids[F.col("event_date")].alias("run_id"),
        F.col("_out.tokens").alias("tokens"),
        F.col("_out.tokens_cut").alias("tokens_cut"),
        F.col("_out.residual").alias("residual"),
    )
    try:
        with spark_progress(run.spark, f"stage {event_dates[0]}" + (f"..{event_dates[-1]}" if len(event_dates) > 1 else "")):
            run.replace_partition(staged, tables.STAGING_DAY_TOKENS, predicate)
        model_counts = tokenized.counts()   # reads the UDF output the write cached
    except Exception as exc:  # a failing row inside the UDF (one line naming user, source, date) or a refused path
        row_error = worker_error_from(exc)
        if row_error is None:
            raise
        raise row_error from None
    finally:
        tokenized.release()

    token_rows = rows_written(run, tables.STAGING_DAY_TOKENS, event_dates)
    raw_rows = {d: c["raw_rows"] for d, c in counts.items()}
    quarantined = {d: c["quarantined_rows"] for d, c in counts.items()}
    active_users = {d: c["active_users"] for d, c in counts.items()}
    duplicates = {d: c["duplicate_rows"] for d, c in counts.items()}
    seconds = (time.monotonic() - started) / len(runs)   # the pass is shared: each date gets its share
    results = {}
    for r in runs:
        d = r.event_date
        results[d] = StageResult(raw_rows=raw_rows.get(d, 0), quarantined_rows=quarantined.get(d, 0),
                                 active_users=active_users.get(d, 0), token_rows=token_rows.get(d, 0), seconds=seconds,
                                 duplicate_rows=duplicates.get(d, 0), **_document_counts(d, token_rows, model_counts),
                                 **cuts.get(d, {}))
        log.info("staged %s: %s", d, results[d])
        log.info("%s: %d documents, %d embedded (inference.dedup_documents=%s)", d, results[d].documents,
                 results[d].documents_embedded, run.settings.inference.dedup_documents)
        if d in cuts:
            log.warning("%s: %d documents had more than document.max_lines=%d distinct lines; %d lines were left out "
                        "(the rarest of each document), by source: %s", d, cuts[d]["documents_cut"],
                        sources.document.max_lines, cuts[d]["lines_cut"], cuts[d]["cuts_by_source"])
    record_steps([StepRecord(r, "stage", "ok", seconds, asdict(results[r.event_date])) for r in runs])
    return results


def _document_counts(event_date: str, token_rows: dict[str, int],
                     model_counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """``documents`` (staged rows less the tabular ones) and ``documents_embedded`` of a date."""
    counts = model_counts.get(event_date, {})
    return {"documents": token_rows.get(event_date, 0) - counts.get("tabular_rows", 0),
            "documents_embedded": counts.get("documents_embedded", 0)}


NIGHT = "_night"   # the date a raw row is validated and counted on (see night_events)


def night_events(raw: DataFrame, event_dates: list[str]) -> DataFrame:
    """The ``raw_events`` rows the nights of ``event_dates`` check, with the night of each (``_night``).

    A row belongs to its ``event_date`` partition. A row whose ``event_date`` is null (it would
    match no night's partition filter and vanish) is checked -- and quarantined -- by the night
    of ``to_date(event_ts)``; one whose ``event_ts`` is null too cannot be dated, so every night
    quarantines it until it is fixed (the row is never silently lost). Each of the three reads
    prunes to its partitions (``event_date IN (...)`` / ``event_date IS NULL``)."""
    nights = [date.fromisoformat(d) for d in event_dates]
    dated = raw.where(dates_predicate(event_dates)).withColumn(NIGHT, F.col("event_date"))
    undated = raw.where(F.col("event_date").isNull())
    by_ts = (undated.where(F.to_date("event_ts").isin([F.lit(d) for d in nights]))
             .withColumn(NIGHT, F.to_date("event_ts")))
    night_list = rows_frame(raw.sparkSession, [(d,) for d in nights], StructType.fromDDL(f"{NIGHT} date"))
    undatable = undated.where(F.col("event_ts").isNull()).crossJoin(F.broadcast(night_list))
    return dated.unionByName(by_ts).unionByName(undatable)


def _event_counts(valid: DataFrame, rejected: DataFrame) -> dict[str, dict[str, int]]:
    """Per night: raw rows, quarantined rows (exact duplicates among them, also counted apart)
    and distinct active users, in ONE Spark job (both inputs are filters over the same cached rows)."""
    tagged = (valid.select(NIGHT, "user_id", F.lit(False).alias("bad"), F.lit(False).alias("dup"))
              .unionByName(rejected.select(NIGHT, "user_id", F.lit(True).alias("bad"),
                                           (F.col("_copy") > 1).alias("dup"))))
    rows = tagged.groupBy(NIGHT).agg(
        F.count(F.lit(1)).alias("raw_rows"),
        F.count_if("bad").alias("quarantined_rows"),
        F.count_if("dup").alias("duplicate_rows"),
        F.count_distinct(F.when(~F.col("bad"), F.col("user_id"))).alias("active_users"),
    ).collect()
    keys = ("raw_rows", "quarantined_rows", "duplicate_rows", "active_users")
    return {str(r[NIGHT]): {k: int(r[k] or 0) for k in keys} for r in rows}


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
