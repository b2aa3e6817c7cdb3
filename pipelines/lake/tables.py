"""The catalogue: every Delta table of u2qt declared once (name, schema, partitioning, whether it
holds codes, whether it exists once per table generation, how ``u2qt maintain`` treats it), and
the tokenizer-version guard of the tables that hold codes.

Where a table lives and reading or creating it belong to :class:`pipelines.lake.lake.Lake` (one
per run, with the table generation resolved); the views over the tables are
:mod:`pipelines.lake.views` (one Spark session's temp views) and :mod:`pipelines.lake.catalog`
(the persistent catalog).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from typing import Literal

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipelines.errors import TableCreateRace, TokenizerVersionMismatch, error_condition
from pipelines.lake.schemas import (RAW_EVENTS_SCHEMA, REC_IMPRESSIONS_SCHEMA, USER_LABELS_SCHEMA,
                                    USER_PROFILE_SCHEMA)
from u2qt_core.errors import U2QTError

log = logging.getLogger(__name__)

# MERGE targets: with deletion vectors a MERGE marks replaced rows instead of rewriting every file
# that holds a matched row, so a night's write follows the rows it changes, not the table size.
MERGE_TARGET_PROPERTIES = (("delta.enableDeletionVectors", "true"),)

# (a key containing "token" would be redacted by Spark's spark.redaction.regex in SHOW TBLPROPERTIES)
TOKENIZER_VERSION_PROPERTY = "u2qt.vocab_version"


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: T.StructType
    partition_by: tuple[str, ...] = ()
    versioned: bool = False     # holds codes: pinned to one tokenizer version per table generation
    description: str = ""
    properties: tuple[tuple[str, str], ...] = ()
    # one copy per table generation (<tables_root>/_generations/<id>/<name>; the first at
    # <tables_root>/<name>), else one table shared by every generation
    per_generation: bool = False
    # u2qt maintain (pipelines/ops/maintenance.py): OPTIMIZE ZORDER BY (user_id), plain OPTIMIZE, or left alone
    maintenance: Literal["zorder", "optimize"] | None = None


CODES = T.ArrayType(T.ShortType())

RAW_EVENTS = TableSpec(
    "raw_events",
    RAW_EVENTS_SCHEMA,
    ("event_date",),
    description="one row per behaviour event, one text line each",
)

USER_PROFILE = TableSpec(
    "user_profile",
    USER_PROFILE_SCHEMA,
    description="tabular attributes and engagement score, one snapshot row per user and as_of date",
    maintenance="zorder",
)

STAGING_DAY_TOKENS = TableSpec(
    "staging_day_tokens",
    T.StructType([
        T.StructField("user_id", T.LongType(), False),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("codes", CODES),
        T.StructField("tokenizer_version", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
        # a text row's document in encoder tokens, and those encoder.max_length cut (null: tabular)
        T.StructField("tokens", T.IntegerType()),
        T.StructField("tokens_cut", T.IntegerType()),
        # quantization fidelity: ||r^{L+1}|| / ||z||, the latent's share the codes leave unexplained
        T.StructField("residual", T.FloatType()),
    ]),
    ("event_date",),
    versioned=True,
    description="the night's inference output before its quality gates pass (not for analysts)",
    per_generation=True,
    maintenance="optimize",
)

USER_DAY_TOKENS = TableSpec(
    "user_day_tokens",
    T.StructType([
        T.StructField("user_id", T.LongType(), False),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("codes", CODES, False),
        T.StructField("tokenizer_version", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
    ]),
    ("event_date",),
    versioned=True,
    description="fact table: one row per active (user, source, day); a date is rewritten whole",
    per_generation=True,
    maintenance="optimize",
)

# user_token_history is a VIEW (pipelines/lake/history.py): this spec is its column contract, not a table.
USER_TOKEN_HISTORY = TableSpec(
    "user_token_history",
    T.StructType([
        T.StructField("user_id", T.LongType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("dates", T.ArrayType(T.DateType()), False),
        T.StructField("tokens", CODES, False),
        T.StructField("tokens_per_day", T.IntegerType(), False),
        T.StructField("n_days", T.IntegerType(), False),
        T.StructField("last_date", T.DateType(), False),
        T.StructField("tokenizer_version", T.StringType(), False),
        T.StructField("updated_at", T.TimestampType(), False),
    ]),
    description="view: per (user, source) the tokens of every active day within history.max_days, in date order",
)

HISTORY_BASE = TableSpec(
    "user_token_history_base",
    T.StructType([
        T.StructField("period_start", T.DateType(), False),
        T.StructField("user_id", T.LongType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("dates", T.ArrayType(T.DateType()), False),
        T.StructField("tokens", CODES, False),
        T.StructField("tokenizer_version", T.StringType(), False),
        T.StructField("compacted_at", T.TimestampType(), False),
    ]),
    ("period_start",),
    versioned=True,
    description="compacted history: per period of history.period_days and (user, source) the days' tokens in "
                "date order; written by u2qt maintain, one partition per period, never by the nightly job",
    per_generation=True,
    maintenance="zorder",
)

HISTORY_PERIODS = TableSpec(
    "user_token_history_periods",
    T.StructType([
        T.StructField("period_start", T.DateType(), False),
        T.StructField("covered_through", T.DateType(), False),
        T.StructField("compacted_at", T.TimestampType(), False),
    ]),
    description="which days user_token_history_base holds: [period_start, covered_through] per period; a "
                "re-published date inside a range removes its period (the view then reads user_day_tokens)",
    per_generation=True,
)

USER_TOKENS = TableSpec(
    "user_tokens",
    T.StructType([
        T.StructField("user_id", T.LongType(), False),
        T.StructField("as_of", T.DateType(), False),
        T.StructField("token_tuple", T.ArrayType(T.ShortType()), False),
        T.StructField("sources_present", T.ArrayType(T.StringType()), False),
        T.StructField("engagement", T.DoubleType(), False),
        T.StructField("collision_suffix", T.IntegerType(), False),
        T.StructField("tokenizer_version", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
    ]),
    versioned=True,
    description="collision-resolved identity: each user's latest full token tuple (-1 for a source "
                "not active that day) and its suffix among users with the same tuple",
    properties=MERGE_TARGET_PROPERTIES,
    per_generation=True,
    maintenance="zorder",
)

QUARANTINE = TableSpec(
    "quarantine",
    T.StructType([
        T.StructField("event_date", T.DateType(), False),
        T.StructField("source_table", T.StringType(), False),
        T.StructField("reason", T.StringType(), False),
        T.StructField("row_json", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
    ]),
    ("event_date",),
    description="input rows the night could not use, with the reason; rewritten per date",
    maintenance="optimize",
)

RUN_METRICS = TableSpec(
    "run_metrics",
    T.StructType([
        T.StructField("run_id", T.StringType(), False),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("step", T.StringType(), False),
        T.StructField("status", T.StringType(), False),
        T.StructField("tokenizer_version", T.StringType()),
        T.StructField("active_users", T.LongType()),
        T.StructField("token_rows", T.LongType()),
        T.StructField("quarantined_rows", T.LongType()),
        T.StructField("collision_rate", T.DoubleType()),
        T.StructField("min_level_utilization", T.DoubleType()),
        T.StructField("seconds", T.DoubleType()),
        T.StructField("metrics_json", T.StringType()),
        T.StructField("recorded_at", T.TimestampType(), False),
    ]),
    description="one row per run step: counts, utilization, collision rate, timings (append-only log)",
    maintenance="optimize",
)

USER_FEATURES = TableSpec(
    "user_features",
    T.StructType([
        T.StructField("user_id", T.LongType(), False),
        T.StructField("as_of", T.DateType(), False),
        T.StructField("active_days", T.IntegerType(), False),
        T.StructField("sources_present", T.ArrayType(T.StringType()), False),
        T.StructField("codebook_vectors", T.ArrayType(T.FloatType())),
        T.StructField("bag_indices", T.ArrayType(T.IntegerType())),
        T.StructField("bag_values", T.ArrayType(T.FloatType())),
        T.StructField("fused_embedding", T.ArrayType(T.FloatType())),
        T.StructField("bag_size", T.IntegerType(), False),
        T.StructField("tokenizer_version", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
    ]),
    ("as_of",),
    versioned=True,
    description="tokens as user features: per user active within features.window_days of as_of, the "
                "recency-weighted mean codebook vector per source, a TF-IDF bag of codes and the sequence "
                "encoder's fused embedding, as features.representations chooses (pipelines/features/user_features.py)",
    per_generation=True,
)

TOKEN_QUALITY = TableSpec(
    "token_quality",
    T.StructType([
        T.StructField("event_date", T.DateType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("level", T.IntegerType(), False),
        T.StructField("documents", T.LongType(), False),
        T.StructField("codes_used", T.IntegerType(), False),
        T.StructField("codes_allowed", T.IntegerType()),
        T.StructField("utilization", T.DoubleType()),
        T.StructField("perplexity", T.DoubleType()),
        T.StructField("train_perplexity", T.DoubleType()),
        T.StructField("psi", T.DoubleType()),
        T.StructField("js", T.DoubleType()),
        # what sampling alone gives at this night's document count (drift.noise_quantile): the gates
        # judge psi - psi_noise and js - js_noise
        T.StructField("psi_noise", T.DoubleType()),
        T.StructField("js_noise", T.DoubleType()),
        # whether the gates judged this row's PSI / JS (drift.judged_levels, drift.min_documents)
        T.StructField("psi_judged", T.BooleanType()),
        # per source (the same on each of its level rows): documents whose every code is among the
        # training top codes of its level, the training share alike, and the relative residual norm
        T.StructField("top_code_share", T.DoubleType()),
        T.StructField("train_top_code_share", T.DoubleType()),
        T.StructField("residual_mean", T.DoubleType()),
        T.StructField("residual_p95", T.DoubleType()),
        T.StructField("train_residual_mean", T.DoubleType()),
        # what residual_mean is judged against (drift.*_residual_ratio): the held-out days' of
        # `u2qt evaluate` when the version was evaluated, else the training sample's
        T.StructField("reference_residual_mean", T.DoubleType()),
        T.StructField("drift_status", T.StringType(), False),
        T.StructField("tokenizer_version", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
    ]),
    ("event_date",),
    versioned=True,
    description="per night, source and codebook level: drift of the codes from the tokenizer's training "
                "distribution (PSI, Jensen-Shannon), utilization, perplexity, top-code share and quantization "
                "fidelity (relative residual norm); rewritten per date by the quality step",
    per_generation=True,
)

GENERATIONS = TableSpec(
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

# the evaluation's inputs (written by the synthetic world, read by `u2qt evaluate` and `u2qt paper-eval`)
USER_LABELS = TableSpec("user_labels", USER_LABELS_SCHEMA, description="outcome labels per user and task")
REC_IMPRESSIONS = TableSpec("rec_impressions", REC_IMPRESSIONS_SCHEMA,
                            description="recommendation impressions and clicks per user and day")

#: what the nights write (``u2qt init-tables`` creates them)
OUTPUT_TABLES = (STAGING_DAY_TOKENS, TOKEN_QUALITY, USER_DAY_TOKENS, HISTORY_BASE, HISTORY_PERIODS, USER_TOKENS, USER_FEATURES,
                 QUARANTINE, RUN_METRICS)
#: the night's inputs and outputs: what ``u2qt sql``, ``u2qt tables`` and ``u2qt catalog`` show
ALL_TABLES = (RAW_EVENTS, USER_PROFILE, *OUTPUT_TABLES)
#: every table of the lake, by name
TABLES: dict[str, TableSpec] = {spec.name: spec for spec in (*ALL_TABLES, GENERATIONS, USER_LABELS, REC_IMPRESSIONS)}


def spec(name: str) -> TableSpec:
    """The catalogue's entry of table ``name`` (a :class:`U2QTError` for a view or an unknown name)."""
    if name == USER_TOKEN_HISTORY.name:
        raise U2QTError(f"{name} is a view over user_day_tokens: read it with pipelines.lake.views.read_view")
    try:
        return TABLES[name]
    except KeyError:
        raise U2QTError(f"no table {name!r} in the catalogue (pipelines/lake/tables.py): {sorted(TABLES)}") from None


def table_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def create_table(spark: SparkSession, path: str, spec: TableSpec, tokenizer_version: str | None) -> None:
    """Create ``spec`` at ``path`` unless it exists (then only the version check of a table that
    holds codes); a create that loses a race raises :class:`TableCreateRace` (retried by the caller)."""
    from delta.tables import DeltaTable

    if table_exists(spark, path):
        if spec.versioned and tokenizer_version:
            check_tokenizer_version(spark, spec.name, path, tokenizer_version)
        return
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(spec.schema)
    if spec.partition_by:
        builder = builder.partitionedBy(*spec.partition_by)
    if spec.versioned and tokenizer_version:
        builder = builder.property(TOKENIZER_VERSION_PROPERTY, tokenizer_version)
    if spec.description:
        builder = builder.comment(spec.description)
    for key, value in spec.properties:
        builder = builder.property(key, value)
    try:
        builder.execute()
    except Exception as exc:  # noqa: BLE001 - only Delta's table-not-found is translated
        if error_condition(exc) == "DELTA_TABLE_NOT_FOUND":  # CI 2026-12-06: the winner's _delta_log had no commit yet
            raise TableCreateRace(f"create {spec.name} at {path}: another run is creating it") from exc
        raise
    log.info("created Delta table %s at %s", spec.name, path)


def table_properties(spark: SparkSession, path: str) -> dict[str, str]:
    rows = spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()
    return {row["key"]: row["value"] for row in rows}


def check_tokenizer_version(spark: SparkSession, name: str, path: str, tokenizer_version: str) -> None:
    pinned = table_properties(spark, path).get(TOKENIZER_VERSION_PROPERTY)
    if pinned is None:
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('{TOKENIZER_VERSION_PROPERTY}' = '{tokenizer_version}')")
    elif pinned != tokenizer_version:
        raise TokenizerVersionMismatch(
            f"table {name} at {path} holds codes of tokenizer {pinned}, this run uses {tokenizer_version}: "
            "codes of two versions are never mixed. Re-tokenize the history into a new table generation "
            f"(`u2qt retokenize --version {tokenizer_version} --from D1 --to D2`) or promote tokenizer {pinned} again."
        )
