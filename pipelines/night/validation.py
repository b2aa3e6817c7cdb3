"""Row-level checks on the night's inputs: every bad row gets a reason and goes to quarantine.

Rules are Spark column expressions evaluated in order; the first that matches names the row's
reason, so each quarantined row carries exactly one, human-readable reason.

``raw_events`` rows are first prepared by :func:`sanitise_events`: text that is not valid UTF-8
is flagged (quarantined by a rule; its quarantined copy shows U+FFFD for the bad bytes, so the
JSON stays readable), and control characters (``\\p{Cc}``: NUL, tab, newline, DEL, C1 codes) in
valid text are replaced by spaces, which is the text the encoder sees. Exact duplicate rows are
kept once; the extra copies are quarantined (counted, never silently dropped). A row that passes
every rule can no longer crash the inference UDF: its text is valid, non-blank, bounded UTF-8 of
a known source, and a profile that passes has every feature present, finite and in range.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipelines.config.settings import SourcesConfig, TabularFeature, ValidationConfig

#: helper columns (prefix ``_``) never reach ``row_json`` of the quarantine
HELPER_PREFIX = "_"
_UTF8_OK = "_utf8_ok"
_COPY = "_copy"
CONTROL_CHARS = r"\p{Cc}"
BLANK_CHARS = r"[\s\p{Z}\p{Cc}\p{Cf}]"     # whitespace, separators, control and format characters


@dataclass(frozen=True)
class Split:
    """The rows that pass, and the rows that don't with a ``reason`` column; ``cached``: the
    persisted rows both are filters of, when the caller asked for it (:meth:`release` frees them)."""

    valid: DataFrame
    rejected: DataFrame
    cached: DataFrame | None = None

    def release(self) -> None:
        if self.cached is not None:
            self.cached.unpersist()


def first_reason(rules: list[tuple[Column, Column]]) -> Column:
    """The message of the first rule a row breaks (null when it breaks none)."""
    reason = F.lit(None).cast("string")
    for condition, message in reversed(rules):
        reason = F.when(condition, message).otherwise(reason)
    return reason


def split_by_rules(frame: DataFrame, rules: list[tuple[Column, Column]]) -> Split:
    """Tag each row with the first rule it breaks."""
    tagged = frame.withColumn("_reason", first_reason(rules))
    valid = tagged.where(F.col("_reason").isNull()).drop("_reason")
    rejected = tagged.where(F.col("_reason").isNotNull()).withColumnRenamed("_reason", "reason")
    return Split(valid, rejected)


def check_raw_events(events: DataFrame, sources: SourcesConfig, limits: ValidationConfig, *,
                     cache: bool = False) -> Split:
    """The one way ``raw_events`` rows are checked (night, backfill, training sample): sanitised
    by :func:`sanitise_events`, then split by :func:`raw_event_rules`. Valid rows keep the input's
    columns (sanitised text); rejected rows also carry the helper columns (``_...``).

    ``cache``: persist the sanitised rows, so that every query over ``valid`` and ``rejected``
    (the night's counts, quarantine, documents) reads them instead of repeating the read and the
    exact-copy window's shuffle; free them with :meth:`Split.release`."""
    sanitised = sanitise_events(events)
    if cache:
        sanitised = sanitised.persist()
    split = split_by_rules(sanitised, raw_event_rules(sources, limits))
    return Split(split.valid.drop(_UTF8_OK, _COPY), split.rejected, sanitised if cache else None)


def check_profiles(profiles: DataFrame, sources: SourcesConfig) -> Split:
    """The one way ``user_profile`` rows are checked (:func:`profile_rules`)."""
    return split_by_rules(profiles, profile_rules(sources.tabular.features))


def sanitise_events(events: DataFrame) -> DataFrame:
    """``raw_events`` rows ready for :func:`raw_event_rules`: ``_utf8_ok`` flags valid UTF-8 text,
    ``text`` is made valid and its control characters become spaces, and ``_copy`` numbers the
    exact copies of a row (over every column as read, helpers such as the night included:
    1 = the copy kept)."""
    text = F.col("text")
    copies = Window.partitionBy(*[F.col(c) for c in events.columns]).orderBy(F.lit(1))
    return (events
            .withColumn(_COPY, F.row_number().over(copies))
            .withColumn(_UTF8_OK, F.coalesce(F.is_valid_utf8(text), F.lit(True)))
            .withColumn("text", F.regexp_replace(F.make_valid_utf8(text), CONTROL_CHARS, " ")))


def _number_rules(column: str, low: float, high: float, where: str, setting: str) -> list[tuple[Column, Column]]:
    value = F.col(column).cast("double")
    return [
        (F.isnan(value), F.lit(f"{where}{column} is NaN")),
        (F.abs(value) == F.lit(float("inf")), F.concat(F.lit(f"{where}{column} is "), value.cast("string"))),
        ((value < F.lit(low)) | (value > F.lit(high)),
         F.concat(F.lit(f"{where}{column} "), value.cast("string"), F.lit(f" is outside [{low:g}, {high:g}] ({setting})"))),
    ]


def raw_event_rules(sources: SourcesConfig, limits: ValidationConfig) -> list[tuple[Column, Column]]:
    """Checks for :func:`sanitise_events` rows of ``raw_events`` (of one day or many)."""
    known = list(sources.text_sources)
    text = F.col("text")
    low, high = limits.amount_range
    return [
        (F.col("user_id").isNull(), F.lit("user_id is null")),
        (F.col("source").isNull(), F.lit("source is null")),
        (~F.col("source").isin(known),
         F.concat(F.lit("unknown source '"), F.col("source"), F.lit(f"' (known: {', '.join(known)})"))),
        (text.isNull(), F.lit("text is empty")),
        (~F.col(_UTF8_OK), F.lit("text is not valid UTF-8")),
        (F.length(F.regexp_replace(text, BLANK_CHARS, "")) == 0, F.lit("text is empty")),
        (F.length(text) > limits.max_text_chars,
         F.concat(F.lit("text is "), F.length(text).cast("string"),
                  F.lit(f" characters, over validation.max_text_chars ({limits.max_text_chars})"))),
        (F.col("event_ts").isNull(), F.lit("event_ts is null")),
        (F.col("event_date").isNull(),
         F.concat(F.lit("event_date is null (event_ts "), F.col("event_ts").cast("string"), F.lit(")"))),
        (F.to_date(F.col("event_ts")) != F.col("event_date"),
         F.concat(F.lit("event_ts "), F.col("event_ts").cast("string"), F.lit(" is not on event_date "),
                  F.col("event_date").cast("string"))),
        *_number_rules("amount", low, high, "", "validation.amount_range"),
        (F.col(_COPY) > 1, F.lit("exact duplicate of another raw_events row (one copy kept)")),
    ]


def profile_rules(features: list[TabularFeature]) -> list[tuple[Column, Column]]:
    """Checks for the ``user_profile`` rows of active users: every feature column present, and
    numeric ones finite and inside their configured ``range``."""
    rules: list[tuple[Column, Column]] = []
    for feature in features:
        column = F.col(feature.column)
        rules.append((column.isNull(), F.lit(f"user_profile.{feature.column} is null")))
        if feature.transform in ("scale", "log1p_scale"):
            low, high = feature.range or (float("-inf"), float("inf"))
            rules += _number_rules(feature.column, low, high, "user_profile.", "range in the sources config")
    return rules


def to_quarantine(rejected: DataFrame, source_table: str, event_date: str | Column, run_id: str | Column) -> DataFrame:
    """Rows in the ``quarantine`` schema: the full original row as JSON, never lost.
    ``event_date`` / ``run_id``: a value, or a column (several dates in one pass)."""
    payload = [c for c in rejected.columns if c != "reason" and not c.startswith(HELPER_PREFIX)]
    return rejected.select(
        (event_date if isinstance(event_date, Column) else F.to_date(F.lit(event_date))).alias("event_date"),
        F.lit(source_table).alias("source_table"),
        F.col("reason"),
        F.to_json(F.struct(*[F.col(c) for c in payload]), {"ignoreNullFields": "false"}).alias("row_json"),
        (run_id if isinstance(run_id, Column) else F.lit(run_id)).alias("run_id"),
    )
