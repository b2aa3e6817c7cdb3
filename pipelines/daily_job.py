"""The nightly tokenization of one date, in three idempotent steps.

1. :func:`stage` — validate the day's ``raw_events`` (bad rows -> ``quarantine`` with a reason),
   build one document per active (user, source) and one tabular vector per active user,
   spread them over Spark partitions, run encoder + MRQ-VAE in a pandas UDF and write the codes
   to ``staging_day_tokens`` (the date's partition is replaced).
2. :func:`check_quality` — gates on the staged day (row counts, null/short codes, quarantine
   rate, collision rate, codebook utilization); failing gates raise before anything is
   published.
3. :func:`publish` — replace the date in ``user_day_tokens``, MERGE the day's tokens into
   ``user_token_history`` (a date already present is replaced, never appended twice; an older
   date lands in date order) and update the collision-resolved ``user_tokens``.

Each step reads only what the previous one wrote to Delta, so a crash at any point is repaired
by running the step (or the whole date) again, and the Airflow DAG can retry steps on their own.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipelines import tables
from pipelines.documents import build_documents, build_tabular_inputs, latest_profiles
from pipelines.inference import inference_spec, make_tokenize_udf
from pipelines.settings import PipelineSettings, SourcesConfig
from pipelines.validation import profile_rules, raw_event_rules, split_by_rules, to_quarantine
from u2qt_core.errors import CheckpointError, U2QTError

log = logging.getLogger(__name__)


class QualityGateFailed(U2QTError):
    """The staged day failed a quality gate; nothing of it was published."""


@dataclass(frozen=True)
class TokenizerInfo:
    """What the driver needs to know about the tokenizer (without loading it for inference)."""

    model_dir: str
    version: str
    sources: tuple[str, ...]
    tabular_sources: tuple[str, ...]
    num_levels: int
    shared_prefix_levels: int      # leading levels whose codes come from shared codebooks
    num_codes: int
    variant: str


def load_tokenizer_info(settings: PipelineSettings) -> TokenizerInfo:
    from u2qt_core.checkpoint import load_tokenizer

    model_dir = Path(settings.model_dir).expanduser().absolute()
    if not model_dir.exists():
        raise CheckpointError(f"model_dir {model_dir} does not exist: train a tokenizer first (`u2qt train`)")
    model, version = load_tokenizer(model_dir)
    cfg = model.config
    shared = {"multiview": cfg.shared_levels, "shared_only": cfg.num_levels, "specific_only": 0}.get(cfg.variant, 0)
    return TokenizerInfo(
        model_dir=str(model_dir), version=version, sources=tuple(cfg.sources),
        tabular_sources=tuple(cfg.tabular_sources), num_levels=cfg.num_levels,
        shared_prefix_levels=shared, num_codes=cfg.num_codes, variant=cfg.variant,
    )


@dataclass
class DayRun:
    """One date's run: where it reads and writes and which tokenizer it uses."""

    spark: SparkSession
    settings: PipelineSettings
    event_date: str
    run_id: str
    tokenizer: TokenizerInfo
    sources: SourcesConfig = field(init=False)

    def __post_init__(self) -> None:
        date.fromisoformat(self.event_date)  # ValueError names a bad date early
        self.sources = self.settings.sources_config()
        missing = set(self.sources.all_sources) - set(self.tokenizer.sources)
        if missing:
            raise CheckpointError(
                f"tokenizer {self.tokenizer.version} has no codebooks for source(s) {sorted(missing)} "
                f"configured in {self.settings.sources}"
            )

    @property
    def date_predicate(self) -> str:
        return f"event_date = DATE'{self.event_date}'"

    def path(self, name: str) -> str:
        return self.settings.table_path(name)

    def read(self, name: str) -> DataFrame:
        return tables.read_table(self.spark, self.settings, name)

    def replace_partition(self, frame: DataFrame, spec: tables.TableSpec) -> None:
        """Atomically replace this date's partition of ``spec`` with ``frame``."""
        tables.ensure_table(self.spark, self.settings, spec, self.tokenizer.version)
        (frame.select(*[f.name for f in spec.schema.fields])
            .write.format("delta").mode("overwrite")
            .option("replaceWhere", self.date_predicate)
            .save(self.path(spec.name)))

    def record(self, step: str, status: str, seconds: float, metrics: dict) -> None:
        tables.ensure_table(self.spark, self.settings, tables.RUN_METRICS)
        row = {
            "run_id": self.run_id, "event_date": date.fromisoformat(self.event_date), "step": step,
            "status": status, "tokenizer_version": self.tokenizer.version,
            "active_users": metrics.get("active_users"), "token_rows": metrics.get("token_rows"),
            "quarantined_rows": metrics.get("quarantined_rows"),
            "collision_rate": metrics.get("collision_rate"),
            "min_level_utilization": metrics.get("min_level_utilization"),
            "seconds": float(seconds), "metrics_json": json.dumps(metrics, sort_keys=True, default=str),
        }
        fields = [f for f in tables.RUN_METRICS.schema.fields if f.name != "recorded_at"]
        frame = self.spark.createDataFrame(
            [tuple(row[f.name] for f in fields)], StructType(fields)
        ).withColumn("recorded_at", F.current_timestamp())
        frame.write.format("delta").mode("append").save(self.path(tables.RUN_METRICS.name))


# --------------------------------------------------------------------------- step 1: stage
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
    spark, sources = run.spark, run.sources
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


# --------------------------------------------------------------------------- step 2: gates
def day_tuples(run: DayRun, day_tokens: DataFrame) -> DataFrame:
    """Per active user: the full token tuple over all sources in token order (``-1`` x L for a
    source without tokens that day) and the sources present."""
    L = run.tokenizer.num_levels
    order = run.sources.all_sources
    per_user = day_tokens.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct("source", "codes"))).alias("by_source")
    )
    missing = F.array_repeat(F.lit(-1).cast("smallint"), L)
    return per_user.select(
        "user_id",
        F.flatten(F.array(*[F.coalesce(F.col("by_source")[s], missing) for s in order])).alias("token_tuple"),
        F.filter(F.array(*[F.lit(s) for s in order]), lambda s: F.col("by_source")[s].isNotNull()).alias("sources_present"),
    )


def collision_rate(tuples: DataFrame) -> float:
    """Share of users whose full token tuple is shared with at least one other user."""
    sizes = tuples.groupBy("token_tuple").count()
    row = sizes.agg(
        F.sum("count").alias("users"), F.sum(F.when(F.col("count") > 1, F.col("count")).otherwise(0)).alias("colliding")
    ).first()
    return float(row["colliding"] or 0) / float(row["users"]) if row and row["users"] else 0.0


def level_utilization(run: DayRun, day_tokens: DataFrame) -> dict[str, float]:
    """Share of codes used per codebook that day: ``shared.1`` over all sources, ``bill.3`` per source."""
    info = run.tokenizer
    exploded = day_tokens.select("source", F.posexplode("codes").alias("level0", "code"))
    shared = (exploded.where(F.col("level0") < info.shared_prefix_levels)
              .groupBy("level0").agg(F.countDistinct("code").alias("used")).collect())
    specific = (exploded.where(F.col("level0") >= info.shared_prefix_levels)
                .groupBy("source", "level0").agg(F.countDistinct("code").alias("used")).collect())
    out = {f"shared.{r['level0'] + 1}": r["used"] / info.num_codes for r in shared}
    out.update({f"{r['source']}.{r['level0'] + 1}": r["used"] / info.num_codes for r in specific})
    return dict(sorted(out.items()))


def check_quality(run: DayRun) -> dict:
    """Compute the staged day's metrics and enforce ``settings.quality``; returns the metrics."""
    started = time.monotonic()
    gates = run.settings.quality
    staged = run.read("staging_day_tokens").where(run.date_predicate).persist()
    L = run.tokenizer.num_levels
    token_rows = staged.count()
    bad_codes = staged.where(F.col("codes").isNull() | (F.size("codes") != L)).count()
    foreign = staged.where(F.col("tokenizer_version") != run.tokenizer.version).count()
    raw_rows = run.read("raw_events").where(run.date_predicate).count()
    quarantined = run.read("quarantine").where(run.date_predicate).where("source_table = 'raw_events'").count()
    valid_codes = staged.where(F.col("codes").isNotNull() & (F.size("codes") == L))
    tuples = day_tuples(run, valid_codes)
    utilization = level_utilization(run, valid_codes)
    metrics = {
        "raw_rows": raw_rows,
        "quarantined_rows": quarantined,
        "quarantine_rate": quarantined / raw_rows if raw_rows else 0.0,
        "token_rows": token_rows,
        "null_code_rate": bad_codes / token_rows if token_rows else 0.0,
        "foreign_version_rows": foreign,
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


# --------------------------------------------------------------------------- step 3: publish
def _history_merge_expressions(L: int) -> dict[str, str]:
    """SQL for the history MERGE: the stored (dates, tokens) as per-day entries, the date being
    written replaced (so re-runs never append twice) and the entries sorted by date (so a
    backfill lands where processing in order would have put it)."""
    entries = f"transform(t.dates, (d, i) -> named_struct('event_date', d, 'codes', slice(t.tokens, i * {L} + 1, {L})))"
    incoming = "named_struct('event_date', s.event_date, 'codes', s.codes)"
    merged = f"array_sort(concat(filter({entries}, e -> e.event_date != s.event_date), array({incoming})))"
    return {
        "unchanged": f"array_contains({entries}, {incoming})",
        "dates": f"transform({merged}, e -> e.event_date)",
        "tokens": f"flatten(transform({merged}, e -> e.codes))",
        "n_days": f"size({merged})",
        "last_date": f"array_max(transform({merged}, e -> e.event_date))",
    }


def merge_history(run: DayRun, day_tokens: DataFrame) -> int:
    """MERGE the day's tokens into ``user_token_history``; returns the rows that changed.

    Rows whose history already holds exactly (date, codes) are dropped before the MERGE, so a
    re-run matches nothing and writes nothing."""
    from delta.tables import DeltaTable

    L = run.tokenizer.num_levels
    path = tables.ensure_table(run.spark, run.settings, tables.USER_TOKEN_HISTORY, run.tokenizer.version)
    expr = _history_merge_expressions(L)
    target = DeltaTable.forPath(run.spark, path)
    changed = (day_tokens.alias("s")
               .join(target.toDF().alias("t"),
                     (F.col("s.user_id") == F.col("t.user_id")) & (F.col("s.source") == F.col("t.source")), "left")
               .where(F.col("t.user_id").isNull() | ~F.expr(expr["unchanged"]))
               .select("s.*")
               .localCheckpoint(eager=True))
    n_changed = changed.count()
    if n_changed == 0:
        log.info("history: every row already holds %s: nothing to merge", run.event_date)
        return 0
    (target.alias("t")
        .merge(changed.alias("s"), "t.user_id = s.user_id AND t.source = s.source")
        .whenMatchedUpdate(set={
            "dates": expr["dates"], "tokens": expr["tokens"], "n_days": expr["n_days"],
            "last_date": expr["last_date"], "tokenizer_version": "s.tokenizer_version",
            "updated_at": "current_timestamp()",
        })
        .whenNotMatchedInsert(values={
            "user_id": "s.user_id", "source": "s.source", "dates": "array(s.event_date)", "tokens": "s.codes",
            "tokens_per_day": str(L), "n_days": "1", "last_date": "s.event_date",
            "tokenizer_version": "s.tokenizer_version", "updated_at": "current_timestamp()",
        })
        .execute())
    return n_changed


IDENTITY_COLUMNS = ("as_of", "token_tuple", "sources_present", "engagement", "tokenizer_version", "run_id")


def update_identities(run: DayRun, day_tokens: DataFrame) -> int:
    """Upsert each active user's latest tuple into ``user_tokens`` and re-rank the suffix of every
    tuple group the day changed (groups users joined and groups they left): within a group of
    identical tuples the most engaged user keeps suffix 0, ties broken by user_id. Returns the
    number of users whose row changed (0 on a re-run)."""
    from delta.tables import DeltaTable
    from pyspark.sql import Window

    spark = run.spark
    path = tables.ensure_table(spark, run.settings, tables.USER_TOKENS, run.tokenizer.version)
    engagement = latest_profiles(run.read("user_profile"), run.event_date).select("user_id", "engagement")
    incoming = (day_tuples(run, day_tokens)
                .join(engagement, "user_id", "left")
                .select("user_id", F.to_date(F.lit(run.event_date)).alias("as_of"), "token_tuple", "sources_present",
                        F.coalesce("engagement", F.lit(0.0)).alias("engagement"),
                        F.lit(run.tokenizer.version).alias("tokenizer_version"), F.lit(run.run_id).alias("run_id")))
    current = DeltaTable.forPath(spark, path)
    old = current.toDF().select("user_id", *[F.col(c).alias(f"old_{c}") for c in ("as_of", "token_tuple", "engagement", "tokenizer_version")])
    # keep users that are new, or whose newer-or-same-day state differs (a backfilled older day never wins)
    changed = (incoming.join(old, "user_id", "left")
               .where(F.col("old_as_of").isNull()
                      | ((F.col("as_of") >= F.col("old_as_of"))
                         & ((F.col("as_of") != F.col("old_as_of")) | (F.col("token_tuple") != F.col("old_token_tuple"))
                            | (F.col("engagement") != F.col("old_engagement"))
                            | (F.col("tokenizer_version") != F.col("old_tokenizer_version")))))
               .localCheckpoint(eager=True))
    n_changed = changed.count()
    if n_changed == 0:
        log.info("identities: no user's tuple changed on %s: nothing to merge", run.event_date)
        return 0
    # groups touched: the tuples users move to and the ones they leave (read before the MERGE)
    touched = (changed.select("token_tuple")
               .unionByName(changed.where(F.col("old_token_tuple").isNotNull()).select(F.col("old_token_tuple").alias("token_tuple")))
               .distinct().localCheckpoint(eager=True))
    (current.alias("t")
        .merge(changed.select("user_id", *IDENTITY_COLUMNS).alias("s"), "t.user_id = s.user_id")
        .whenMatchedUpdate(set={c: f"s.{c}" for c in IDENTITY_COLUMNS})
        .whenNotMatchedInsert(values={"user_id": "s.user_id", **{c: f"s.{c}" for c in IDENTITY_COLUMNS}, "collision_suffix": "0"})
        .execute())

    members = DeltaTable.forPath(spark, path).toDF().join(touched, "token_tuple", "left_semi")
    rank = Window.partitionBy("token_tuple").orderBy(F.desc("engagement"), F.asc("user_id"))
    reranked = (members.select("user_id", "collision_suffix", (F.row_number().over(rank) - 1).alias("suffix"))
                .where(F.col("collision_suffix") != F.col("suffix"))
                .localCheckpoint(eager=True))
    if reranked.count():
        (DeltaTable.forPath(spark, path).alias("t")
            .merge(reranked.alias("r"), "t.user_id = r.user_id")
            .whenMatchedUpdate(set={"collision_suffix": "r.suffix"})
            .execute())
    return n_changed


def publish(run: DayRun) -> dict:
    """Make the staged (and gated) day visible: fact table, history, identities."""
    started = time.monotonic()
    staged = run.read("staging_day_tokens").where(run.date_predicate)
    mismatched = staged.where(F.col("tokenizer_version") != run.tokenizer.version).limit(1).count()
    if mismatched:
        raise tables.TokenizerVersionMismatch(
            f"staging_day_tokens for {run.event_date} was written by another tokenizer; re-run the stage step")
    day_tokens = staged.where(F.col("codes").isNotNull()).localCheckpoint(eager=True)
    run.replace_partition(day_tokens, tables.USER_DAY_TOKENS)
    metrics = {
        "token_rows": day_tokens.count(),
        "history_rows_changed": merge_history(run, day_tokens),
        "identities_changed": update_identities(run, day_tokens),
    }
    run.record("publish", "ok", time.monotonic() - started, metrics)
    log.info("published %s: %d token rows", run.event_date, metrics["token_rows"])
    return metrics


def run_day(spark: SparkSession, settings: PipelineSettings, event_date: str, run_id: str | None = None) -> dict:
    """All three steps for one date (what one DAG run does)."""
    run = DayRun(spark, settings, event_date, run_id or default_run_id(event_date), load_tokenizer_info(settings))
    staged = stage(run)
    metrics = check_quality(run)
    published = publish(run)
    return {"stage": asdict(staged), **metrics, "publish": published}


def default_run_id(event_date: str) -> str:
    return f"manual__{event_date}__{int(time.time())}"
