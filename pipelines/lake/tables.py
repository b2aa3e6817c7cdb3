"""Delta table catalogue of u2qt: names, schemas, partitioning, and the tokenizer-version guard.

Every table is a path-based Delta table under ``settings.tables_root``; the views over them are
:mod:`pipelines.lake.views` (one Spark session's temp views) and :mod:`pipelines.lake.catalog`
(the persistent catalog).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from pipelines.lake.schemas import RAW_EVENTS_SCHEMA, USER_PROFILE_SCHEMA
from pipelines.config.settings import PipelineSettings
from u2qt_core.errors import U2QTError
from pipelines.errors import TableCreateRace, TokenizerVersionMismatch, error_condition

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
        # per source (the same on each of its level rows): documents whose every code is among the
        # training top codes of its level, the training share alike, and the relative residual norm
        T.StructField("top_code_share", T.DoubleType()),
        T.StructField("train_top_code_share", T.DoubleType()),
        T.StructField("residual_mean", T.DoubleType()),
        T.StructField("residual_p95", T.DoubleType()),
        T.StructField("train_residual_mean", T.DoubleType()),
        T.StructField("drift_status", T.StringType(), False),
        T.StructField("tokenizer_version", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
    ]),
    ("event_date",),
    versioned=True,
    description="per night, source and codebook level: drift of the codes from the tokenizer's training "
                "distribution (PSI, Jensen-Shannon), utilization, perplexity, top-code share and quantization "
                "fidelity (relative residual norm); rewritten per date by the quality step",
)

OUTPUT_TABLES = (STAGING_DAY_TOKENS, TOKEN_QUALITY, USER_DAY_TOKENS, HISTORY_BASE, HISTORY_PERIODS, USER_TOKENS, USER_FEATURES,
                 QUARANTINE, RUN_METRICS)
ALL_TABLES = (RAW_EVENTS, USER_PROFILE, *OUTPUT_TABLES)


def table_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def ensure_table(spark: SparkSession, settings: PipelineSettings, spec: TableSpec, tokenizer_version: str | None = None) -> str:
    """Create ``spec`` if missing; for versioned tables check (or pin) the tokenizer version.

    Returns the table path. Raises :class:`TokenizerVersionMismatch` when the table was
    created for another tokenizer version.
    """
    from pipelines.lake.concurrency import retry_on_conflict

    path = settings.table_path(spec.name)
    if not table_exists(spark, path):
        # two runs may race to create it: the loser's conflict is retried and then finds the table
        retry_on_conflict(lambda: _create_table(spark, path, spec, tokenizer_version), f"create {spec.name}")
    elif spec.versioned and tokenizer_version:
        check_tokenizer_version(spark, spec.name, path, tokenizer_version)
    return path


def check_versioned_tables(spark: SparkSession, settings: PipelineSettings, tokenizer_version: str) -> list[str]:
    """Check every existing output table that holds codes against ``tokenizer_version`` (the stage
    step calls it before inference, so a tokenizer of another version is refused in seconds,
    not at publish after the night's inference). Returns the names checked."""
    checked = []
    for spec in OUTPUT_TABLES:
        path = settings.table_path(spec.name)
        if spec.versioned and table_exists(spark, path):
            check_tokenizer_version(spark, spec.name, path, tokenizer_version)
            checked.append(spec.name)
    return checked


def ensure_all(spark: SparkSession, settings: PipelineSettings, tokenizer_version: str) -> list[str]:
    """Create every output table that is missing (``u2qt init-tables``, the DAG's first task), so
    runs of several dates started afterwards never race to create them. Returns their paths."""
    return [ensure_table(spark, settings, spec, tokenizer_version) for spec in OUTPUT_TABLES]


def _create_table(spark: SparkSession, path: str, spec: TableSpec, tokenizer_version: str | None) -> None:
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


def read_table(spark: SparkSession, settings: PipelineSettings, name: str) -> DataFrame:
    """The Delta table ``name`` (the ``user_token_history`` view: :func:`pipelines.lake.views.read_view`)."""
    if name == USER_TOKEN_HISTORY.name:
        raise U2QTError(f"{name} is a view over user_day_tokens: read it with pipelines.lake.views.read_view")
    path = settings.table_path(name)
    if not table_exists(spark, path):
        raise U2QTError(f"Delta table {name} does not exist at {path}")
    return spark.read.format("delta").load(path)
