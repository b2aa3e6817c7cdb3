"""What the two windows of a document cut, measured before a night and at training.

A document is at most ``document.max_lines`` distinct lines, most frequent first
(:mod:`pipelines.night.documents`), and the encoder reads at most ``encoder.max_length`` tokens of it,
from its start. Both cut the rarest lines of a long document. The night counts both per
source (``stage``: ``cuts_by_source``; ``quality_gates``: ``truncation``, from the UDF's own
token counts) and warns above ``quality.warn_truncated_share``; this module measures both on a
sample, for ``u2qt check-inputs`` (before the first night, with suggested settings) and ``u2qt
train`` (on its training sample, in the bundle's summary).

Cost: the lines report is one aggregation over the checked dates' valid events; the token report
tokenizes a sample of at most ``per_source`` documents per source on the driver (no encoding).
"""
from __future__ import annotations

import logging
import math

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config.settings import PipelineSettings

log = logging.getLogger(__name__)

SUGGEST_QUANTILE = 0.9        # settings are suggested to keep this share of documents whole
SAMPLE_PER_SOURCE = 2000      # documents per source that check-inputs tokenizes


def token_report(settings: PipelineSettings, documents: dict[str, list[str]]) -> dict[str, dict]:
    """Per text source of ``documents`` (``{source: [document]}``): the share of documents over
    ``encoder.max_length`` tokens, the share of their tokens cut, and the token length's median,
    p90 and maximum."""
    from u2qt_core.encoders.text import get_text_encoder

    encoder = get_text_encoder(settings.encoder)
    sources = settings.sources_config()
    out = {}
    for source, docs in sorted(documents.items()):
        if not docs:
            continue
        instruction = sources.text_sources[source].instruction if settings.encoder.pooling == "last_token" else None
        tokens, cut = encoder.count_tokens(docs, instruction=instruction)
        out[source] = {"documents": len(docs), "truncated_share": float((cut > 0).mean()),
                       "tokens_cut_share": float(cut.sum() / tokens.sum()), "tokens_p50": int(np.median(tokens)),
                       "tokens_p90": int(np.percentile(tokens, 90)), "tokens_max": int(tokens.max())}
    return out


def line_report(valid_events: DataFrame, settings: PipelineSettings) -> dict[str, dict]:
    """Per text source, in one aggregation over valid events: documents, the share over
    ``document.max_lines`` distinct lines, the share of distinct lines left out, and the p90 of
    distinct lines per document."""
    cap = settings.sources_config().document.max_lines
    per_document = valid_events.groupBy("user_id", "event_date", "source").agg(F.count_distinct("text").alias("lines"))
    rows = per_document.groupBy("source").agg(
        F.count(F.lit(1)).alias("documents"), F.count_if(F.col("lines") > cap).alias("over"),
        F.sum(F.greatest(F.col("lines") - cap, F.lit(0))).alias("cut"), F.sum("lines").alias("lines"),
        F.percentile_approx("lines", SUGGEST_QUANTILE).alias("p90")).collect()
    return {r["source"]: {"documents": int(r["documents"]), "over_share": r["over"] / r["documents"],
                          "lines_cut_share": r["cut"] / r["lines"], "lines_p90": int(r["p90"])}
            for r in sorted(rows, key=lambda r: r["source"])}


def sample_documents(spark: SparkSession, settings: PipelineSettings, dates: list[str] | None,
                     per_source: int) -> dict[str, list[str]]:
    """At most ``per_source`` documents per text source of ``dates`` (default: every date),
    built as the night builds them, sampled by a seeded hash."""
    from pipelines.tokenizer.sample import sample_inputs

    sources = settings.sources_config()
    start, end = (min(dates), max(dates)) if dates else (None, None)
    rows = (sample_inputs(spark, settings, start_date=start, end_date=end, max_per_source=per_source)
            .where(F.col("source").isin(list(sources.text_sources))).select("source", "document").collect())
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["source"], []).append(row["document"])
    return out


def suggestions(settings: PipelineSettings, tokens: dict[str, dict], lines: dict[str, dict]) -> list[tuple[str, str, str]]:
    """``(severity, where, message)``: a warning with a suggested setting per source whose
    documents a window cuts more often than ``quality.warn_truncated_share``, and one note per
    window for the sources it leaves whole."""
    from u2qt_core.encoders.text import get_text_encoder

    limit = settings.quality.warn_truncated_share
    max_length, max_lines = settings.encoder.max_length, settings.sources_config().document.max_lines
    context = get_text_encoder(settings.encoder).context_limit
    out, whole = [], []
    for source, t in tokens.items():
        if t["truncated_share"] <= limit:
            whole.append(f"{source} p90 {t['tokens_p90']}")
            continue
        wanted = int(math.ceil(t["tokens_p90"] / 64.0) * 64)
        if context is None or wanted <= context:
            advice = f"set encoder.max_length: {wanted} to keep {SUGGEST_QUANTILE:.0%} of them whole"
        else:
            advice = (f"keeping {SUGGEST_QUANTILE:.0%} whole needs {wanted} tokens, over this encoder's {context}: "
                      "use a longer-context encoder (encoder.model_path) or lower document.max_lines")
        out.append(("warning", "encoder.max_length",
                    f"{source}: {t['truncated_share']:.1%} of {t['documents']} sampled documents exceed "
                    f"{max_length} tokens ({t['tokens_cut_share']:.1%} of their tokens cut: the rarest lines; "
                    f"median {t['tokens_p50']}, p90 {t['tokens_p90']}, max {t['tokens_max']}); {advice}"))
    if whole:
        out.append(("note", "encoder.max_length", f"{max_length} tokens keep the sampled documents whole "
                                                  f"(at most {limit:.0%} cut) for {', '.join(whole)}"))
    whole = []
    for source, n in lines.items():
        if n["over_share"] <= limit:
            whole.append(f"{source} p90 {n['lines_p90']}")
            continue
        out.append(("warning", "document.max_lines",
                    f"{source}: {n['over_share']:.1%} of {n['documents']} documents have more than {max_lines} distinct "
                    f"lines ({n['lines_cut_share']:.1%} of lines left out, the rarest of each document; p90 "
                    f"{n['lines_p90']}); set document.max_lines: {n['lines_p90']} to keep {SUGGEST_QUANTILE:.0%} of "
                    "them whole (the encoder then reads more tokens: mind encoder.max_length)"))
    if whole:
        out.append(("note", "document.max_lines", f"{max_lines} distinct lines keep the documents whole "
                                                  f"(at most {limit:.0%} cut) for {', '.join(whole)}"))
    return out
