"""Each distinct (source, document) of a stage pass embedded once.

A text source's codes depend only on its document (the encoder pads each text to its own length
bucket and the MRQ-VAE quantizes row by row, :mod:`pipelines.night.inference`), so the encoder
+ quantizer need to see each distinct ``(source, document)`` of the pass only once; the UDF's
output (the whole ``_out`` struct, whatever fields it has) is then joined back to every
``(user_id, event_date, source)`` holding that document.

How: a document's key is the SHA-256 of its text (32 bytes, :func:`document_key`). The text rows
are grouped by ``(source, key)`` -- Spark's partial aggregation folds the repeats inside each map
partition before the shuffle -- keeping one text and a representative ``(event_date, user_id)``
(the smallest: the row a failing document is named by). Only those rows go through the UDF; the
join back shuffles ``(user_id, event_date, source, key)`` of every text row and the codes of the
distinct ones, never the texts again.

Not folded: the tabular source (a feature vector per user through an MLP). Its vectors hold
continuous profile values (balances, engagement) that almost never repeat, and its MLP costs
microseconds a row: a fold would add a shuffle and save nothing.

With ``inference.dedup_documents: false`` every row goes through the UDF, as before (the
benchmark's baseline); both modes give the same codes for every row (tests/pipelines/test_dedup.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

KEY = "_doc_key"    # binary(32): SHA-256 of the document text; null on rows that are not folded
TEXT = "_text"      # true on text rows (what the encoder embeds)
OUT = "_out"        # the UDF's struct, carried whole through the join back


def document_key(document: Column) -> Column:
    """SHA-256 of a document's UTF-8 text as 32 bytes: a collision is as good as impossible
    (a 64-bit hash would give ~1 collision in 10^4 nights at 10^8 documents a night)."""
    return F.unhex(F.sha2(document, 256))


@dataclass
class Tokenized:
    """The UDF's output of a pass.

    ``rows``: ``(user_id, event_date, source, _out)``, one row per input row (text and tabular),
    ready to be staged. ``model_rows``: the rows that went through the UDF, persisted (no texts:
    ``user_id, event_date, source, _text, _out``; a folded text row carries its representative's
    user and date), so that the counts after the write read the cache, not the inputs."""

    rows: DataFrame
    model_rows: DataFrame
    dedup: bool

    def counts(self) -> dict[str, dict[str, int]]:
        """Per date: ``documents_embedded`` (text rows through the encoder: a folded document
        counts on its representative's date) and ``tabular_rows``. One job over the cache."""
        per_date = self.model_rows.groupBy("event_date").agg(
            F.count_if(F.col(TEXT)).alias("documents_embedded"),
            F.count_if(~F.col(TEXT)).alias("tabular_rows"),
        ).collect()
        return {str(r["event_date"]): {"documents_embedded": int(r["documents_embedded"]),
                                       "tabular_rows": int(r["tabular_rows"])} for r in per_date}

    def release(self) -> None:
        self.model_rows.unpersist()


def fold_documents(documents: DataFrame) -> DataFrame:
    """Text rows ``(user_id, event_date, source, document, features)`` -> one row per distinct
    ``(source, document)`` with the same columns (user and date of the smallest ``(event_date,
    user_id)`` holding it) plus ``_doc_key``."""
    grouped = documents.withColumn(KEY, document_key(F.col("document"))).groupBy("source", KEY).agg(
        F.min(F.struct("event_date", "user_id")).alias("_rep"),
        F.first("document").alias("document"),
    )
    return grouped.select(
        F.col("_rep.user_id").alias("user_id"),
        F.col("_rep.event_date").alias("event_date"),
        "source",
        "document",
        F.lit(None).cast("array<float>").alias("features"),
        KEY,
    )


def tokenize_inputs(documents: DataFrame, tabular: DataFrame, tokenize, *, partitions: int,
                    dedup: bool) -> Tokenized:
    """Run ``tokenize`` (the UDF of :func:`pipelines.night.inference.make_tokenize_udf`) over
    the pass's text rows (folded when ``dedup``) and tabular rows, spread over ``partitions``
    by user, and give every input row its ``_out``.

    ``documents`` / ``tabular``: ``(user_id, event_date, source, document, features)`` frames
    (:func:`pipelines.night.documents.build_documents`, :func:`build_tabular_inputs`)."""
    no_key = F.lit(None).cast("binary").alias(KEY)
    texts = fold_documents(documents) if dedup else documents.select("*", no_key)
    inputs = (texts.withColumn(TEXT, F.lit(True))
              .unionByName(tabular.select("*", no_key, F.lit(False).alias(TEXT)))
              .repartition(partitions, "user_id"))
    model_rows = inputs.select(
        "user_id", "event_date", "source", KEY, TEXT,
        tokenize("user_id", "event_date", "source", "document", "features").alias(OUT),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    if not dedup:
        return Tokenized(model_rows.select("user_id", "event_date", "source", OUT), model_rows, dedup)
    own = model_rows.where(F.col(KEY).isNull()).select("user_id", "event_date", "source", OUT)
    shared = model_rows.where(F.col(KEY).isNotNull()).select("source", KEY, OUT)
    holders = documents.select("user_id", "event_date", "source", document_key(F.col("document")).alias(KEY))
    joined = holders.join(shared, ["source", KEY], "inner").select("user_id", "event_date", "source", OUT)
    return Tokenized(own.unionByName(joined), model_rows, dedup)
