"""U²QT-AAAI inference inside Spark: the lines of each document embedded one by one, a user-day's
sources kept together, the front end and the MRQ-VAE in the same pandas UDF.

A FOUNDv2 row's codes depend on its own document only (:mod:`pipelines.night.inference`); a U²QT
source's codes also depend on its context sources of the same user and day (the causal
Q-Former). So the night groups its model inputs per ``(user_id, event_date)``: one row holds
every source's document or feature vector (``items``, sorted by source), the UDF turns them into
sequences (a text document: its lines, each embedded by the text encoder; the tabular vector: its
features one by one) and returns one struct per source, exploded back into the rows that
:mod:`pipelines.night.stage` writes. A document's lines never leave its user-day row, so they are
always in one batch. Documents are not deduplicated on this path (a text's codes depend on its
context; :mod:`pipelines.night.dedup` applies to FOUNDv2 only).

Lines: a document is ``"<label>: <line> [*] <line> ..."`` (:func:`~pipelines.night.documents.split_document`);
its tokens and the tokens ``encoder.max_length`` cut are the sums over its lines. A document with
more lines than the front end's ``max_len`` keeps its first ``max_len`` (the most frequent).

Cost per document: one encoder pass per line (lines are short: a few dozen tokens) plus the front
end over at most ``max_len`` elements; ``make bench-inference`` does not measure it yet.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.night.dedup import OUT, TEXT, Tokenized
from pipelines.night.documents import split_document
from pipelines.night.inference import InferenceSpec, get_embedder, run_chunks, worker_cached
from u2qt_core.errors import CheckpointError

log = logging.getLogger(__name__)

#: the UDF's output: one struct per source of the user-day
USER_DAY_TOKENS = "array<struct<source:string,codes:array<smallint>,tokens:int,tokens_cut:int,residual:float>>"


class LineSequences:
    """Rows ``(source, document, features)`` -> each row's sequence ``float32 [T, d_in]`` with its
    tokens and the tokens truncation cut (None for a tabular row)."""

    def __init__(self, spec: InferenceSpec) -> None:
        self.spec = spec
        self.embedder = get_embedder(spec)
        self.labels = dict(spec.labels)

    def sequences(self, sources: np.ndarray, documents: np.ndarray,
                  features: np.ndarray) -> list[tuple[np.ndarray, int | None, int | None]]:
        """One ``(sequence [T, d_in], tokens, tokens_cut)`` per row, in row order. The lines of all
        text rows sharing an instruction go to the encoder in one call."""
        out: list = [None] * len(sources)
        by_instruction: dict[str | None, list[tuple[int, str]]] = {}
        for i, (source, document, vector) in enumerate(zip(sources, documents, features)):
            source = str(source)
            if source in self.spec.tabular_sources:
                out[i] = (np.asarray(vector, dtype=np.float32).reshape(-1, 1), None, None)
            else:
                lines = split_document(str(document), self.labels.get(source, source), self.spec.line_separator)
                by_instruction.setdefault(self.embedder.instruction(source), []).extend((i, line) for line in lines)
        for instruction, lines in by_instruction.items():
            encoded = self.embedder.encoder.encode_counted([line for _, line in lines], instruction=instruction)
            owners = np.array([i for i, _ in lines])
            for i in np.unique(owners):
                mine = owners == i
                out[i] = (encoded.vectors[mine], int(encoded.tokens[mine].sum()), int(encoded.tokens_cut[mine].sum()))
        return out


def get_line_sequences(spec: InferenceSpec) -> LineSequences:
    return worker_cached("lines", spec, LineSequences)


class SequenceRuntime:
    """The loaded U²QT tokenizer of one worker process and its line encoder."""

    def __init__(self, spec: InferenceSpec) -> None:
        from u2qt_core.bundle import load_bundle

        self.lines = get_line_sequences(spec)
        model, version, _ = load_bundle(Path(spec.model_dir))
        if version != spec.tokenizer_version:
            raise CheckpointError(f"tokenizer at {spec.model_dir} is {version} but the driver planned this run with "
                                  f"{spec.tokenizer_version}: the model folder changed during the run")
        self.model = model.eval()
        log.info("worker loaded U²QT tokenizer %s", version)

    @classmethod
    def from_model(cls, spec: InferenceSpec, model) -> "SequenceRuntime":
        """The runtime over an in-memory U²QT tokenizer (no bundle): ``u2qt paper-eval`` times the
        night's per-user-day work with it."""
        import torch

        runtime = cls.__new__(cls)
        runtime.lines, runtime.model, runtime.torch = get_line_sequences(spec), model.eval(), torch
        return runtime

    def tokenize_days(self, sources: np.ndarray, documents: np.ndarray, features: np.ndarray) -> list[list[dict]]:
        """Per user-day (each argument holds one array per user-day): a list of
        ``{source, codes int16 [L], tokens, tokens_cut, residual}``, one per source it holds."""
        from u2qt_core.u2qt_model import SequenceBatch, pad_sequences

        owners = np.repeat(np.arange(len(sources)), [len(s) for s in sources])
        flat = [np.concatenate([np.asarray(a, dtype=object) for a in column]) if len(owners) else np.array([], dtype=object)
                for column in (sources, documents, features)]
        encoded = self.lines.sequences(*flat)
        names = list(self.model.frontend_config.input_dims)
        per_day: list[dict[str, int]] = [{} for _ in sources]
        for row, (day, source) in enumerate(zip(owners, flat[0])):
            per_day[day][str(source)] = row
        inputs, masks = {}, {}
        for name in names:
            width = self.model.frontend_config.input_dims[name]
            seqs = [encoded[day[name]][0] if name in day else None for day in per_day]
            inputs[name], masks[name] = pad_sequences(seqs, width, self.model.frontend_config.max_len)
        quantized = self.model.quantize_measured(SequenceBatch(inputs, masks))   # no_grad, eval mode
        out: list[list[dict]] = []
        for d, day in enumerate(per_day):
            items = []
            for source, row in sorted(day.items()):
                codes, residual = quantized[source]
                _, tokens, cut = encoded[row]
                items.append({"source": source, "codes": codes[d].numpy().astype(np.int16), "tokens": tokens,
                              "tokens_cut": cut, "residual": float(residual[d])})
            out.append(items)
        return out


def make_user_day_udf(spec: InferenceSpec):
    """``tokenize(user_id, event_date, sources, documents, features) -> array<struct>``
    (:data:`USER_DAY_TOKENS`) over user-day rows; non-deterministic so Spark runs it once."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(USER_DAY_TOKENS)
    def tokenize(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        runtime: SequenceRuntime = worker_cached("sequence-runtime", spec, SequenceRuntime)
        for frame in batches:
            user_ids, event_dates, sources, documents, features = (series.to_numpy() for series in frame)
            yield pd.Series(run_chunks(spec, user_ids, event_dates, (sources, documents, features), runtime.tokenize_days))

    return tokenize.asNondeterministic()


def make_line_embed_udf(spec: InferenceSpec):
    """``embed_lines(user_id, event_date, source, document, features) -> array<array<float>>``: a
    row's sequence (its lines' embeddings, or its features one by one): the training sample."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<array<float>>")
    def embed_lines(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        lines = get_line_sequences(spec)

        def work(sources: np.ndarray, documents: np.ndarray, features: np.ndarray) -> list:
            return [list(seq) for seq, _, _ in lines.sequences(sources, documents, features)]

        for frame in batches:
            user_ids, event_dates, *columns = (series.to_numpy() for series in frame)
            yield pd.Series(run_chunks(spec, user_ids, event_dates, tuple(columns), work))

    return embed_lines


def tokenize_user_days(documents: DataFrame, tabular: DataFrame, tokenize, *, partitions: int) -> Tokenized:
    """Group the pass's model inputs per ``(user_id, event_date)``, run ``tokenize``
    (:func:`make_user_day_udf`) and explode its structs back into one row per source:
    the same :class:`~pipelines.night.dedup.Tokenized` FOUNDv2's path gives the stage."""
    items = F.struct("source", "document", "features")
    days = (documents.unionByName(tabular).groupBy("user_id", "event_date")
            .agg(F.sort_array(F.collect_list(items)).alias("items"))
            .repartition(partitions, "user_id"))
    out = tokenize("user_id", "event_date", F.col("items.source"), F.col("items.document"), F.col("items.features"))
    model_rows = (days.select("user_id", "event_date", F.explode(out).alias(OUT))
                  .select("user_id", "event_date", F.col(f"{OUT}.source").alias("source"), OUT,
                          F.col(f"{OUT}.tokens").isNotNull().alias(TEXT))
                  .persist(StorageLevel.MEMORY_AND_DISK))
    return Tokenized(model_rows.select("user_id", "event_date", "source", OUT), model_rows, False)


def embed_sequences(inputs: DataFrame, spec: InferenceSpec, partitions: int) -> tuple[list[tuple[int, str]], list[dict[str, np.ndarray]]]:
    """Run the line encoder over ``inputs`` (``user_id, event_date, source, document, features``)
    in Spark and collect the user-days: ``(keys [(user_id, event_date)], [{source: [T, d_in]}])``,
    ordered by user and date."""
    embed = make_line_embed_udf(spec)
    rows = (inputs.repartition(partitions, "user_id")
            .select("user_id", "event_date", "source", embed("user_id", "event_date", "source", "document", "features").alias("x"))
            .orderBy("user_id", "event_date", "source").collect())
    keys: list[tuple[int, str]] = []
    days: list[dict[str, np.ndarray]] = []
    for row in rows:
        key = (int(row["user_id"]), str(row["event_date"]))
        if not keys or keys[-1] != key:
            keys.append(key)
            days.append({})
        days[-1][row["source"]] = np.asarray(row["x"], dtype=np.float32)
    return keys, days
