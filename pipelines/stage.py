"""Step 1 of the night: validate the day's ``raw_events`` (bad rows -> ``quarantine`` with a
reason), build one document per active (user, source) and one tabular vector per active user,
spread them over Spark partitions, run encoder + MRQ-VAE in a pandas UDF and write the codes to
``staging_day_tokens`` (the date's partition is replaced)."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from pyspark.sql import functions as F

from pipelines import tables
from pipelines.day_run import DayRun
from pipelines.documents import build_documents, build_tabular_inputs, latest_profiles
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
    started = time.monotonic()
    sources = run.sources
    events = run.read("raw_events").where(run.date_predicate)
    checked = split_by_rules(events, raw_event_rules(sources))
    valid = checked.valid.persist()
    active = valid.select("user_id").distinct()

    profiles = latest_profiles(run.read("user_profile"), run.event_date).join(active, "user_id", "inner")
    profiles = profiles.withColumn("event_date", F.to_date(F.lit(run.event_date)))
    profile_check = split_by_rules(profiles, profile_rules(sources.tabular.features))
    without_profile = active.join(profiles.select("user_id"), "user_id", "left_anti").withColumn(
        "reason", F.lit(f"no user_profile row with as_of <= {run.event_date}: tabular tokens skipped")
    )
    quarantine = (
        to_quarantine(checked.rejected, "raw_events", run.event_date, run.run_id)
        .unionByName(to_quarantine(profile_check.rejected, "user_profile", run.event_date, run.run_id))
        .unionByName(to_quarantine(without_profile, "user_profile", run.event_date, run.run_id))
    )
    run.replace_partition(quarantine, tables.QUARANTINE)

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
        F.lit(run.run_id).alias("run_id"),
    )
    run.replace_partition(staged, tables.STAGING_DAY_TOKENS)

    result = StageResult(
        raw_rows=events.count(),
        quarantined_rows=run.read("quarantine").where(run.date_predicate).where("source_table = 'raw_events'").count(),
        active_users=active.count(),
        token_rows=run.read("staging_day_tokens").where(run.date_predicate).count(),
        seconds=time.monotonic() - started,
    )
    valid.unpersist()
    run.record("stage", "ok", result.seconds, asdict(result))
    log.info("staged %s: %s", run.event_date, result)
    return result
