"""The input contract of the night, and a check of a lake's own tables against it
(``u2qt check-inputs``).

The contract is derived, not written twice: the source names and the tabular feature columns
come from the sources config (``conf/sources.yaml``), and the row rules are the night's own (:mod:`pipelines.night.validation`), so
the check reports exactly what a night would quarantine, and why.

Each difference is one line, ``<severity>: <table>.<column>: <what differs>``:

* ``error``: the night cannot run on the table (it is missing, or a column it reads is missing or
  of a type it cannot use);
* ``warning``: the night runs but loses rows or meaning (rows it would quarantine, by reason with
  a count and one example; a source value no config names; a configured source with no rows; a
  one-hot value outside its list, which becomes all zeros; a null engagement, ranked as 0);
* ``note``: columns the night never reads, or a layout that makes it slower.

The accepted types include each type :mod:`pipelines.lake.schemas` defines (a test keeps them in
step). Cost: a few aggregation passes per table (plus the night's duplicate-row window over
``raw_events``); give ``dates`` to check a few days of a long history instead of all of it.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.night.cadence import cadence_differences
from pipelines.night.findings import Difference
from pipelines.config.settings import PipelineSettings, SourcesConfig, TabularFeature
from pipelines.night.validation import check_raw_events, first_reason, profile_rules, raw_event_rules, sanitise_events

__all__ = ["ColumnContract", "Difference", "input_contract", "check_inputs"]

log = logging.getLogger(__name__)

_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)
_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_EXAMPLES = 5


class ColumnContract(NamedTuple):
    """A column the night reads: its name, the Spark types it accepts (the first is the one the
    schemas define), and what it is used for."""

    column: str
    accepts: tuple[type[T.DataType], ...]
    used_for: str
    required: bool = True

    @property
    def type_names(self) -> str:
        return " or ".join(sorted({t.typeName() for t in self.accepts}))


def input_contract(sources: SourcesConfig) -> dict[str, list[ColumnContract]]:
    """``{table: [ColumnContract]}`` for ``raw_events`` and ``user_profile`` under ``sources``."""
    known = ", ".join(sources.text_sources)
    events = [
        ColumnContract("user_id", _INTEGRAL, "who the event belongs to"),
        ColumnContract("event_ts", (T.TimestampType, T.TimestampNTZType), "line order inside a document"),
        ColumnContract("event_date", (T.DateType,), "the night the event belongs to (partition column)"),
        ColumnContract("source", (T.StringType,), f"which text source: one of {known}"),
        ColumnContract("text", (T.StringType,), "one line of the source's daily document"),
        ColumnContract("amount", _NUMERIC, "checked against validation.amount_range (may be null)"),
        ColumnContract("status", (T.StringType,), "read by u2qt paper-eval on the synthetic world only", required=False),
    ]
    profile = [
        ColumnContract("user_id", _INTEGRAL, "who the snapshot belongs to"),
        ColumnContract("as_of", (T.DateType,), "a night uses each user's newest snapshot with as_of <= its date"),
        ColumnContract("engagement", _NUMERIC, "ranks users whose token tuples collide (null ranks as 0)"),
        *[_feature_contract(f) for f in sources.tabular.features],
    ]
    return {"raw_events": events, "user_profile": profile}


def _feature_contract(feature: TabularFeature) -> ColumnContract:
    if feature.transform in ("scale", "log1p_scale"):
        return ColumnContract(feature.column, _NUMERIC, f"tabular feature ({feature.transform})")
    if feature.transform == "bool":
        return ColumnContract(feature.column, (T.BooleanType,), "tabular feature (bool)")
    return ColumnContract(feature.column, (T.StringType,), f"tabular feature (onehot of {feature.values})")


def check_inputs(spark: SparkSession, settings: PipelineSettings, dates: list[str] | None = None) -> tuple[list[Difference], dict[str, int]]:
    """Check ``raw_events`` and ``user_profile`` of ``settings`` against :func:`input_contract`
    (``raw_events`` of ``dates`` only, when given). Returns the differences and the rows checked."""
    from pipelines.lake.lake import Lake

    lake = Lake(spark, settings)
    sources = settings.sources_config()
    contract = input_contract(sources)
    differences: list[Difference] = []
    rows: dict[str, int] = {}
    for table, columns in contract.items():
        path = lake.path(table)
        if not lake.exists(table):
            differences.append(Difference("error", table, f"no Delta table at {path}"))
            continue
        frame = lake.read(table)
        schema_differences = _schema_differences(table, frame.schema, columns)
        differences += schema_differences
        if any(d.severity == "error" for d in schema_differences):
            continue                       # the row checks need the columns the night reads
        if table == "raw_events":
            differences += _layout_notes(spark, path)
            differences += _undated_differences(frame, dates)
            differences += cadence_differences(frame, settings)     # all dates: the windows end at the newest
            if dates:
                frame = frame.where(F.col("event_date").isin([F.lit(d).cast("date") for d in dates]))
            rows[table], found = _event_differences(frame, settings, sources)
            if rows[table]:
                found += _window_differences(spark, settings, frame, dates)
        else:
            rows[table], found = _profile_differences(frame, sources)
        differences += found
        log.info("checked %s: %d rows, %d differences", table, rows[table], len(found) + len(schema_differences))
    return differences, rows


def _schema_differences(table: str, schema: T.StructType, columns: list[ColumnContract]) -> list[Difference]:
    out: list[Difference] = []
    by_name = {field.name: field for field in schema.fields}
    for item in columns:
        field = by_name.get(item.column)
        if field is None:
            if item.required:
                out.append(Difference("error", f"{table}.{item.column}",
                                      f"missing column ({item.type_names}; {item.used_for})"))
            else:
                out.append(Difference("note", f"{table}.{item.column}", f"absent ({item.used_for})"))
        elif not isinstance(field.dataType, item.accepts):
            out.append(Difference("error" if item.required else "warning", f"{table}.{item.column}",
                                  f"is {field.dataType.simpleString()}, needs {item.type_names} ({item.used_for})"))
    read = {item.column for item in columns}
    for name in by_name:
        if name not in read:
            out.append(Difference("note", f"{table}.{name}", "not read by the night (not in the contract or the sources config)"))
    return out


def _layout_notes(spark: SparkSession, path: str) -> list[Difference]:
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    partitions = list(detail["partitionColumns"] or [])
    if partitions != ["event_date"]:
        return [Difference("note", "raw_events", f"partitioned by {partitions or 'nothing'}, not [event_date]: "
                                                  "every night then scans the whole table, not its own day")]
    return []


def _window_differences(spark: SparkSession, settings: PipelineSettings, events: DataFrame,
                        dates: list[str] | None) -> list[Difference]:
    """What ``document.max_lines`` and ``encoder.max_length`` would cut (:mod:`pipelines.night.truncation`):
    the lines over every valid event, the tokens over a sample of documents."""
    from pipelines.night.truncation import SAMPLE_PER_SOURCE, line_report, sample_documents, suggestions, token_report

    valid = check_raw_events(events, settings.sources_config(), settings.validation).valid
    tokens = token_report(settings, sample_documents(spark, settings, dates, SAMPLE_PER_SOURCE))
    return [Difference(*line) for line in suggestions(settings, tokens, line_report(valid, settings))]


def _undated_differences(events: DataFrame, dates: list[str] | None) -> list[Difference]:
    """Rows with a null ``event_date``: a night finds them by the date of their ``event_ts`` and
    quarantines them (:func:`pipelines.night.stage.night_events`), so those whose ``event_ts`` falls
    outside the nights that will run (``dates``, default: the table's first to last
    ``event_date``) are never checked nor counted. Reads only the null partition."""
    undated = events.where(F.col("event_date").isNull())
    if dates:
        first, last = F.lit(min(dates)).cast("date"), F.lit(max(dates)).cast("date")
    else:
        bounds = events.where(F.col("event_date").isNotNull()).agg(F.min("event_date"), F.max("event_date")).first()
        first, last = F.lit(bounds[0]), F.lit(bounds[1])
    day = F.to_date("event_ts")
    outside = day.isNotNull() & (first.isNull() | (day < first) | (day > last))
    row = undated.agg(F.count(F.lit(1)).alias("n"), F.count_if(outside).alias("outside"),
                      F.min(F.when(outside, day)).alias("example")).first()
    if not row["outside"]:
        return []
    nights = f"{min(dates)}..{max(dates)}" if dates else "the first to last event_date of the table"
    return [Difference("warning", "raw_events.event_date",
                       f"{row['outside']:,} rows have a null event_date and an event_ts outside the nights checked "
                       f"({nights}), e.g. on {row['example']}: no night sees them, so they are neither tokenized nor "
                       f"quarantined; set event_date upstream, or run the nights of those dates (`u2qt run-day "
                       f"{row['example']}` or a backfill over them: a night takes such rows by the date of event_ts "
                       "and quarantines them)")]


def _rule_counts(frame: DataFrame, rules: list[tuple[Column, Column]]) -> list[tuple[int, str]]:
    """Per rule (first match wins, as in the night): rows broken and one example reason."""
    index = F.lit(None).cast("int")
    for i, (condition, _) in reversed(list(enumerate(rules))):
        index = F.when(condition, F.lit(i)).otherwise(index)
    counted = (frame.withColumn("_rule", index).where(F.col("_rule").isNotNull())
               .groupBy("_rule").agg(F.count(F.lit(1)).alias("n"),
                                     F.first(first_reason(rules), ignorenulls=True).alias("example"))
               .orderBy("_rule").collect())
    return [(int(row["n"]), str(row["example"])) for row in counted]


def _share(n: int, total: int) -> str:
    return f"{n:,} of {total:,} rows ({100.0 * n / max(total, 1):.2f} %)"


def _event_differences(events: DataFrame, settings: PipelineSettings,
                       sources: SourcesConfig) -> tuple[int, list[Difference]]:
    out: list[Difference] = []
    per_source = {row["source"]: int(row["n"]) for row in events.groupBy("source").agg(F.count(F.lit(1)).alias("n")).collect()}
    total = sum(per_source.values())
    if total == 0:
        return 0, [Difference("warning", "raw_events", "no rows (for the dates asked)")]
    for name in sources.text_sources:
        if name not in per_source:
            out.append(Difference("warning", "raw_events.source",
                                  f"no rows name source '{name}' of the sources config: its tokens will all be missing"))
    for value, n in sorted(per_source.items(), key=lambda kv: -kv[1]):
        if value is not None and value not in sources.text_sources:
            out.append(Difference("warning", "raw_events.source",
                                  f"'{value}' in {_share(n, total)} is not a text source of {settings.sources}: "
                                  "quarantined every night (add it to text_sources, or rename it)"))
    rules = raw_event_rules(sources, settings.validation)
    # rows of an unknown source are reported per value above: the other rules look at the rest
    known = events.where(F.col("source").isNull() | F.col("source").isin(list(sources.text_sources)))
    for n, example in _rule_counts(sanitise_events(known), rules):
        out.append(Difference("warning", "raw_events", f"{_share(n, total)} would be quarantined, e.g. '{example}'"))
    return total, out


def _profile_differences(profiles: DataFrame, sources: SourcesConfig) -> tuple[int, list[Difference]]:
    out: list[Difference] = []
    total = profiles.count()
    if total == 0:
        return 0, [Difference("warning", "user_profile", "no rows: every user would be quarantined for lack of a profile")]
    for n, example in _rule_counts(profiles, profile_rules(sources.tabular.features)):
        out.append(Difference("warning", "user_profile", f"{_share(n, total)} would be quarantined, e.g. '{example}'"))
    engagement = F.col("engagement").cast("double")
    bad_engagement = profiles.where(engagement.isNull() | F.isnan(engagement)).count()
    if bad_engagement:
        out.append(Difference("warning", "user_profile.engagement",
                              f"null or NaN in {_share(bad_engagement, total)}: ranked as 0 when their tokens collide"))
    duplicated = profiles.groupBy("user_id", "as_of").count().where("count > 1").count()
    if duplicated:
        out.append(Difference("warning", "user_profile", f"{duplicated:,} (user_id, as_of) pairs have several rows: "
                                                          "which one a night uses is arbitrary"))
    for feature in sources.tabular.features:
        if feature.transform != "onehot":
            continue
        unknown = (profiles.where(F.col(feature.column).isNotNull() & ~F.col(feature.column).isin(feature.values))
                   .groupBy(feature.column).count().orderBy(F.desc("count")).collect())
        if unknown:
            n = sum(int(row["count"]) for row in unknown)
            shown = ", ".join(f"'{row[feature.column]}' ({row['count']:,})" for row in unknown[:_EXAMPLES])
            more = f" and {len(unknown) - _EXAMPLES} more" if len(unknown) > _EXAMPLES else ""
            out.append(Difference("warning", f"user_profile.{feature.column}",
                                  f"values outside {feature.values} in {_share(n, total)}: {shown}{more}; "
                                  "they become all zeros (add them to values)"))
    return total, out
