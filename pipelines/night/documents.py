"""Model inputs of one day: a text document per active (user, source) and a tabular feature
vector per active user.

Document format (FOUNDv2 appendix A style): identical event lines are counted, the most
frequent first (ties: earliest first), at most ``document.max_lines`` distinct lines; a line that
repeats carries its count (``document.count_format``), a line seen once is its text alone
(``document.count_single_lines`` gives every line a count, the format before it existed), e.g.
``PayBill: Paid 32.50 for Braised pork rice ..., 2x [*] Paid 8.00 for ...``. What the cap cuts
is counted by :func:`document_cuts` (the night's ``stage`` metrics), never dropped silently.
"""
from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipelines.config.settings import SourcesConfig, TabularFeature

INPUT_COLUMNS = ("user_id", "event_date", "source", "document", "features")


def build_documents(events: DataFrame, sources: SourcesConfig) -> DataFrame:
    """Valid ``raw_events`` rows -> one row per (user_id, event_date, source):
    ``(user_id, event_date, source, document, features=null)``."""
    doc = sources.document
    counted = events.groupBy("user_id", "event_date", "source", "text").agg(
        F.count(F.lit(1)).alias("n"), F.min("event_ts").alias("first_ts")
    )
    rank_window = Window.partitionBy("user_id", "event_date", "source").orderBy(F.desc("n"), F.asc("first_ts"), F.asc("text"))
    ranked = counted.withColumn("rank", F.row_number().over(rank_window)).where(F.col("rank") <= doc.max_lines)
    counted_line = _format_line(doc.count_format)
    line = counted_line if doc.count_single_lines else F.when(F.col("n") > 1, counted_line).otherwise(F.col("text"))
    labels = F.create_map(*[item for name, src in sources.text_sources.items() for item in (F.lit(name), F.lit(src.label))])
    grouped = ranked.groupBy("user_id", "event_date", "source").agg(
        F.array_sort(F.collect_list(F.struct(F.col("rank"), line.alias("line")))).alias("lines")
    )
    return grouped.select(
        "user_id",
        "event_date",
        "source",
        F.concat(labels[F.col("source")], F.lit(": "),
                 F.array_join(F.transform("lines", lambda x: x["line"]), doc.line_separator)).alias("document"),
        F.lit(None).cast("array<float>").alias("features"),
    )


def split_document(document: str, label: str, separator: str) -> list[str]:
    """Pure-Python inverse of :func:`build_documents`' text: ``"<label>: <line><sep><line>..."`` ->
    its lines, in document order (the U²QT-AAAI path embeds each line on its own). A line whose
    own text holds the separator would split in two; the separator is chosen not to occur in
    event texts (``document.line_separator``)."""
    prefix = f"{label}: "
    body = document[len(prefix):] if document.startswith(prefix) else document
    return [line for line in body.split(separator) if line] or [body]


def document_cuts(events: DataFrame, sources: SourcesConfig, night: str = "event_date") -> dict[str, dict]:
    """Per night (column ``night``): documents with more than ``document.max_lines`` distinct
    lines (``documents_cut``), the distinct lines left out of them (``lines_cut``), and both per
    source (``cuts_by_source``). One aggregation over the night's valid events; nights with
    nothing cut are absent."""
    cap = sources.document.max_lines
    per_document = (events.groupBy("user_id", night, "source")
                    .agg(F.count_distinct("text").alias("lines"))
                    .where(F.col("lines") > cap))
    rows = per_document.groupBy(night, "source").agg(F.count(F.lit(1)).alias("documents_cut"),
                                                     F.sum(F.col("lines") - cap).alias("lines_cut")).collect()
    out: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: (str(r[night]), r["source"])):
        day = out.setdefault(str(r[night]), {"documents_cut": 0, "lines_cut": 0, "cuts_by_source": {}})
        day["documents_cut"] += int(r["documents_cut"])
        day["lines_cut"] += int(r["lines_cut"])
        day["cuts_by_source"][r["source"]] = {"documents_cut": int(r["documents_cut"]), "lines_cut": int(r["lines_cut"])}
    return out


def _format_line(count_format: str) -> Column:
    """``"{text}, {count}x"`` -> a Spark expression over columns ``text`` and ``n``."""
    parts: list[Column] = []
    rest = count_format
    while rest:
        positions = {name: rest.find("{" + name + "}") for name in ("text", "count")}
        found = {name: pos for name, pos in positions.items() if pos >= 0}
        if not found:
            parts.append(F.lit(rest))
            break
        name = min(found, key=found.get)
        pos = found[name]
        if pos:
            parts.append(F.lit(rest[:pos]))
        parts.append(F.col("text") if name == "text" else F.col("n").cast("string"))
        rest = rest[pos + len(name) + 2:]
    return F.concat(*parts)


def feature_expressions(features: list[TabularFeature]) -> list[Column]:
    """One float expression per element of the tabular feature vector, in config order."""
    columns: list[Column] = []
    for feature in features:
        value = F.col(feature.column)
        if feature.transform == "scale":
            columns.append(value.cast("double") / feature.divisor)
        elif feature.transform == "log1p_scale":
            columns.append(F.log1p(F.greatest(value.cast("double"), F.lit(0.0))) / feature.divisor)
        elif feature.transform == "bool":
            columns.append(F.when(value, 1.0).otherwise(0.0))
        else:  # onehot
            columns.extend(F.when(value == F.lit(option), 1.0).otherwise(0.0) for option in feature.values or [])
    return [c.cast("float") for c in columns]


def build_tabular_inputs(profiles: DataFrame, sources: SourcesConfig) -> DataFrame:
    """Valid profile rows with an ``event_date`` column (the day they serve) ->
    ``(user_id, event_date, source, document=null, features)``."""
    return profiles.select(
        "user_id",
        "event_date",
        F.lit(sources.tabular.name).alias("source"),
        F.lit(None).cast("string").alias("document"),
        F.array(*feature_expressions(sources.tabular.features)).alias("features"),
    )


def tabular_vector(row: dict, features: list[TabularFeature]) -> list[float]:
    """Pure-Python twin of :func:`feature_expressions` (tests compare the two)."""
    out: list[float] = []
    for feature in features:
        value = row[feature.column]
        if feature.transform == "scale":
            out.append(float(value) / feature.divisor)
        elif feature.transform == "log1p_scale":
            out.append(math.log1p(max(float(value), 0.0)) / feature.divisor)
        elif feature.transform == "bool":
            out.append(1.0 if value else 0.0)
        else:
            out.extend(1.0 if value == option else 0.0 for option in feature.values or [])
    return out


def profiles_as_of(profiles: DataFrame, user_days: DataFrame) -> DataFrame:
    """Per active (``user_id``, ``event_date``) of ``user_days``: the user's newest snapshot with
    ``as_of <= event_date`` (profile columns plus ``event_date``). The join with the active
    user-days runs before the window, so only their snapshots are ranked; one date or many."""
    eligible = profiles.join(user_days.select("user_id", "event_date"), "user_id", "inner").where(
        F.col("as_of") <= F.col("event_date"))
    newest = Window.partitionBy("user_id", "event_date").orderBy(F.desc("as_of"))
    return eligible.withColumn("_rank", F.row_number().over(newest)).where("_rank = 1").drop("_rank")
