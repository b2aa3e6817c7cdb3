"""Step 1 of the night: validate the day's ``raw_events`` (bad rows -> ``quarantine`` with a
reason), build one document per active (user, source) and one tabular vector per active user,
spread them over Spark partitions, run encoder + MRQ-VAE in a pandas UDF and write the codes to
``staging_day_tokens`` (the date's partition is replaced).

:func:`stage_dates` does the same for several dates in one pass (one inference job over every
date, the model loaded once per worker): what ``u2qt backfill`` runs; :func:`stage` is its
one-date case."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import date

from pyspark.sql import functions as F

from pipelines import tables
from pipelines.day_run import DayRun, dates_predicate
from pipelines.documents import build_documents, build_tabular_inputs, profiles_as_of
from pipelines.inference import inference_spec, make_tokenize_udf
from pipelines.validation import profile_rules, raw_event_rules, split_by_rules, to_quarantine

log = logging.getLogger(__name__)


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
    events = run.read("raw_events").where(predicate)
    checked = split_by_rules(events, raw_event_rules(sources))
    valid = checked.valid.persist()
    active = valid.select("user_id", "event_date").distinct()

    profiles = profiles_as_of(run.read("user_profile"), active)
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
        tokenize("source", "document", "features").alias("codes"),
        F.lit(run.tokenizer.version).alias("tokenizer_version"),
        run_ids[F.col("event_date")].alias("run_id"),
    )
    run.replace_partition(staged, tables.STAGING_DAY_TOKENS, predicate)

    def per_date(frame) -> dict[str, int]:
        return {str(r["event_date"]): r["count"] for r in frame.groupBy("event_date").count().collect()}

    raw_rows = per_date(events)
    quarantined = per_date(run.read("quarantine").where(predicate).where("source_table = 'raw_events'"))
    active_users = per_date(active)
    token_rows = per_date(run.read("staging_day_tokens").where(predicate))
    valid.unpersist()
    seconds = (time.monotonic() - started) / len(runs)   # the pass is shared: each date gets its share
    results = {}
    for r in runs:
        d = r.event_date
        results[d] = StageResult(raw_rows=raw_rows.get(d, 0), quarantined_rows=quarantined.get(d, 0),
                                 active_users=active_users.get(d, 0), token_rows=token_rows.get(d, 0), seconds=seconds)
        r.record("stage", "ok", seconds, asdict(results[d]))
        log.info("staged %s: %s", d, results[d])
    return results
