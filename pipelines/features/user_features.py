"""Tokens as user features: the ``user_features`` table, one row per user and as-of date.

For an as-of date ``A`` the job reads the days ``(A - features.window_days, A]`` of
``user_day_tokens`` (the run's table generation, so one tokenizer version) and writes, for every
user active on at least one of them (``features.representations`` chooses the columns):

* ``codebook_vectors`` float ``[S * code_dim]``: per source (token order) the recency-weighted mean,
  over the user's days of that source, of the quantized vector ``z_hat = sum_l E_l[code_l]`` (the sum
  of the chosen code vectors of the tokenizer bundle, FOUNDv2 eq. 6); zeros for a source the user
  never had in the window. A day ``a`` days before ``A`` weighs ``0.5 ** (a / half_life_days)``;
* ``bag_indices`` int / ``bag_values`` float: a TF-IDF bag of codes, sparse over ``bag_size =
  S * L * T`` columns, column ``(source_index * L + level) * T + code`` (``T`` = the code-table size
  of a level); term frequency = the recency-weighted number of days with that code, idf =
  ``ln((1 + N) / (1 + df)) + 1`` over the ``N`` users of the as-of date, rows L2-normalised
  (scikit-learn's ``TfidfTransformer`` defaults);
* ``fused_embedding`` float ``[S * d_model]``: the sequence encoder's fused embedding of the user's
  ``sequence_encoder.max_steps`` most recent source-days of the window (per-source means of its
  hidden states; :mod:`pipelines.features.sequence_encoder`, trained by ``u2qt train-sequence``).

Cost per as-of date grows with the (user, source, day) rows of the window, i.e. users active in
the window x active days, not with the total user base or the history before the window. The
codebooks (``S`` source routes x ``L`` levels of ``T x code_dim``) are broadcast once per job.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy import sparse

if TYPE_CHECKING:                 # the annotations only; torch is imported where tensors are built
    import torch

from pipelines.lake import tables
from pipelines.night.cadence import check_window
from pipelines.night.day_run import DayRun
from pipelines.features.sequence_encoder import SequenceEmbedder, token_rows
from u2qt_core.alignment.codebooks import CodebookTables

__all__ = ["build_features", "user_features_frame", "FeatureTensors", "feature_tensors"]

log = logging.getLogger(__name__)

# the columns user_features_frame computes: the table's (pipelines/lake/tables.py), less what the job adds
_COMPUTED = T.StructType([f for f in tables.USER_FEATURES.schema.fields
                          if f.name not in ("as_of", "bag_size", "tokenizer_version", "run_id")])


def user_features_frame(rows: pd.DataFrame, books: CodebookTables, idf: np.ndarray | None,
                        want_vectors: bool, sequence: SequenceEmbedder | None = None) -> pd.DataFrame:
    """The features of the users of ``rows`` (every row of a user is in it).

    ``rows``: one row per (user, source, day): ``user_id``, ``day`` (int), ``source_index``,
    ``weight`` (recency), ``codes`` (``L`` ints). ``idf`` float ``[bag_size]`` or None (no bag);
    ``sequence``: the sequence encoder of the fused embedding, or None (not written)."""
    users, row_of = np.unique(rows["user_id"].to_numpy(np.int64), return_inverse=True)
    n, S, D, L = len(users), len(books.sources), books.code_dim, books.levels
    source = rows["source_index"].to_numpy(np.int64)
    weight = rows["weight"].to_numpy(np.float64)
    codes = np.stack(rows["codes"].to_numpy()).astype(np.int64).reshape(len(rows), L)
    user_day = np.unique(row_of * (1 << 32) + rows["day"].to_numpy(np.int64))
    active_days = np.bincount(user_day >> 32, minlength=n)
    present = np.zeros((n, S), dtype=bool)
    present[row_of, source] = True
    out = pd.DataFrame({"user_id": users, "active_days": active_days.astype(np.int32)})
    out["sources_present"] = [[books.sources[s] for s in np.flatnonzero(p)] for p in present]
    out["codebook_vectors"] = None
    if want_vectors:
        mean = np.zeros((n, S * D), dtype=np.float32)
        for s in np.unique(source):
            mask = source == s
            picked = np.arange(int(mask.sum()))
            weights = sparse.csr_matrix((weight[mask], (row_of[mask], picked)), shape=(n, len(picked)))
            total = np.bincount(row_of[mask], weights=weight[mask], minlength=n)
            block = weights @ books.vectors(int(s), codes[mask])
            mean[:, s * D:(s + 1) * D] = block / np.maximum(total, 1e-300)[:, None]
        out["codebook_vectors"] = list(mean)
    out["bag_indices"], out["bag_values"] = None, None
    if idf is not None:
        columns = ((source[:, None] * L + np.arange(L)[None, :]) * books.table_size + codes).ravel()
        tf = sparse.csr_matrix((np.repeat(weight, L), (np.repeat(row_of, L), columns)), shape=(n, books.bag_size))
        tf.sum_duplicates()
        tf.data *= idf[tf.indices]
        norms = np.sqrt(np.asarray(tf.multiply(tf).sum(axis=1)).ravel())
        tf = sparse.diags(1.0 / np.maximum(norms, 1e-300)) @ tf
        tf.sort_indices()
        out["bag_indices"] = [tf.indices[tf.indptr[i]:tf.indptr[i + 1]].astype(np.int32) for i in range(n)]
        out["bag_values"] = [tf.data[tf.indptr[i]:tf.indptr[i + 1]].astype(np.float32) for i in range(n)]
    out["fused_embedding"] = None
    if sequence is not None:
        embedded_users, fused = sequence.embed(rows, books)
        assert np.array_equal(embedded_users, users), "histories_from_rows orders users like np.unique"
        out["fused_embedding"] = list(fused)
    return out


def _per_partition(books_bc, idf_bc, want_vectors: bool, sequence_bc=None):
    """mapInPandas body over a partition sorted by user_id: users whole, whatever the Arrow batches."""
    def features(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        books, idf = books_bc.value, (idf_bc.value if idf_bc is not None else None)
        sequence = SequenceEmbedder(*sequence_bc.value) if sequence_bc is not None else None
        carry: pd.DataFrame | None = None
        for batch in batches:
            if carry is not None and len(carry):
                batch = pd.concat([carry, batch], ignore_index=True)
            if not len(batch):
                continue
            last = batch["user_id"].iloc[-1]
            tail = (batch["user_id"] == last).to_numpy()
            carry = batch[tail]
            if (~tail).any():
                yield user_features_frame(batch[~tail], books, idf, want_vectors, sequence)
        if carry is not None and len(carry):
            yield user_features_frame(carry, books, idf, want_vectors, sequence)
    return features


def _window_rows(run: DayRun, as_of: str, books: CodebookTables) -> DataFrame:
    """``(user_id, day, source_index, weight, codes)`` of the as-of date's window."""
    cfg = run.settings.features
    first = (date.fromisoformat(as_of) - timedelta(days=cfg.window_days - 1)).isoformat()
    age = F.lit(_days_since_epoch(as_of)) - F.col("day")
    return (token_rows(run, first, as_of, books)
            .withColumn("weight", F.pow(F.lit(0.5), age / F.lit(cfg.half_life_days)))
            .select("user_id", "day", "source_index", "weight", "codes"))


def _days_since_epoch(iso: str) -> int:
    """Day number of an ISO date, like ``token_rows``' ``day``."""
    return (date.fromisoformat(iso) - date(1970, 1, 1)).days


def _idf(window: DataFrame, books: CodebookTables) -> tuple[np.ndarray, int]:
    """Smoothed idf ``[bag_size]`` over the window's users, and their number."""
    L, size = books.levels, books.table_size
    exploded = window.select("user_id", "source_index", F.posexplode("codes").alias("level", "code"))
    column = (F.col("source_index") * L + F.col("level")) * size + F.col("code").cast("int")
    counts = exploded.select("user_id", column.alias("column")).distinct().groupBy("column").count().collect()
    users = window.select("user_id").distinct().count()
    df = np.zeros(books.bag_size, dtype=np.float64)
    for row in counts:
        df[row["column"]] = row["count"]
    return np.log((1.0 + users) / (1.0 + df)) + 1.0, users


def build_features(run: DayRun) -> dict:
    """Write ``user_features`` as of the run's date, replacing that ``as_of`` partition, and
    record step ``features`` in ``run_metrics``. Returns its metrics."""
    from u2qt_core.bundle import load_bundle

    started = time.monotonic()
    spark, cfg, as_of = run.spark, run.settings.features, run.event_date
    model, _, _ = load_bundle(run.tokenizer.model_dir)
    books = CodebookTables(model)
    broadcasts = [spark.sparkContext.broadcast(books)]
    if "fused_embedding" in cfg.representations:   # before any scan: a missing encoder fails at once
        broadcasts.append(spark.sparkContext.broadcast(SequenceEmbedder.load(run.settings.model_dir, run.tokenizer.version)))
    try:
        check_window(run.read(tables.USER_DAY_TOKENS.name), as_of, cfg.window_days, "features.window_days", run.settings)
        window = _window_rows(run, as_of, books).localCheckpoint(eager=True)
        idf_bc = None
        if "bag_of_codes" in cfg.representations:
            idf, users = _idf(window, books)
            idf_bc = spark.sparkContext.broadcast(idf)
            broadcasts.append(idf_bc)
        else:
            users = window.select("user_id").distinct().count()
        sequence_bc = broadcasts[1] if "fused_embedding" in cfg.representations else None
        compute = _per_partition(broadcasts[0], idf_bc, "codebook_vectors" in cfg.representations, sequence_bc)
        features = (window.repartition("user_id").sortWithinPartitions("user_id")
                    .mapInPandas(compute, _COMPUTED)
                    .withColumn("as_of", F.to_date(F.lit(as_of)))
                    .withColumn("bag_size", F.lit(books.bag_size))
                    .withColumn("tokenizer_version", F.lit(run.tokenizer.version))
                    .withColumn("run_id", F.lit(run.run_id)))
        run.replace_partition(features, tables.USER_FEATURES, f"as_of = DATE'{as_of}'")
    finally:
        for broadcast in broadcasts:
            broadcast.unpersist()
    seconds = time.monotonic() - started
    metrics = {"active_users": users, "window_days": cfg.window_days, "half_life_days": cfg.half_life_days,
               "representations": list(cfg.representations), "bag_size": books.bag_size}
    run.record("features", "ok", seconds, metrics)
    log.info("user_features as of %s: %d users active in the last %d days, %.1f s", as_of, users,
             cfg.window_days, seconds)
    return metrics


class FeatureTensors(NamedTuple):
    """One as-of date of ``user_features`` as model inputs (``N`` users, in the frame's order)."""

    user_ids: np.ndarray          # int64 [N]
    vectors: "torch.Tensor | None"  # float32 [N, S * code_dim]; None when not written
    bags: "torch.Tensor | None"     # float32 sparse COO [N, bag_size], coalesced; None when not written


def feature_tensors(rows: pd.DataFrame) -> FeatureTensors:
    """``user_features`` rows of one as-of date (a pandas frame, e.g. ``spark.read...toPandas()``)
    -> torch tensors: the dense codebook vectors and the sparse TF-IDF bag of codes."""
    import torch

    user_ids = rows["user_id"].to_numpy(np.int64)
    vectors = bags = None
    if len(rows) and rows["codebook_vectors"].notna().all():
        vectors = torch.from_numpy(np.stack(rows["codebook_vectors"].to_numpy()).astype(np.float32))
    if len(rows) and rows["bag_indices"].notna().all():
        if rows["bag_size"].nunique() != 1:
            raise ValueError(f"rows of several bag sizes {sorted(rows['bag_size'].unique())}: one as-of date "
                             "and one tokenizer version at a time")
        lengths = rows["bag_indices"].map(len).to_numpy(np.int64)
        row = np.repeat(np.arange(len(rows)), lengths)
        col = np.concatenate(rows["bag_indices"].to_numpy()).astype(np.int64)
        values = torch.from_numpy(np.concatenate(rows["bag_values"].to_numpy()).astype(np.float32))
        bags = torch.sparse_coo_tensor(torch.from_numpy(np.stack([row, col])), values,
                                       size=(len(rows), int(rows["bag_size"].iloc[0])),
                                       check_invariants=True).coalesce()     # indices come from a table: check them
    return FeatureTensors(user_ids, vectors, bags)
