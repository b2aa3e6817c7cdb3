"""The sequence encoder in the pipeline: trained on token histories read from Delta, stored beside
the tokenizer version whose codes it reads, and run on the executors by the features job.

Training (``u2qt train-sequence AS_OF``, spark-submit step ``train-sequence``): an approximate
distinct count of the users of ``user_day_tokens`` over ``(AS_OF - history_days, AS_OF]`` sizes a
bucket of ``xxhash64(user_id)``; a second scan collects the bucket's rows to the driver (about
``max_users x history_days x sources`` rows, whatever the user base), builds each user's
history of its ``max_steps`` most recent source-days and trains
:class:`~u2qt_core.alignment.AlignmentTrainer` (token and window tasks; see ``conf/sequence.yaml``)
on the tokenizer bundle's codebook vectors. The result goes to
``<model_dir>/sequence_encoders/<tokenizer_version>/`` (``model.pt`` + ``config.json``), written
to a temporary folder and renamed, so a killed run leaves the previous encoder in place.

Inference (:class:`SequenceEmbedder`): histories of whole users -> fused embeddings
``float32 [users, num_sources * d_model]``; the features job runs it inside its ``mapInPandas``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.lake import tables
from pipelines.night.cadence import check_window
from pipelines.night.day_run import DayRun
from u2qt_core.alignment.codebooks import CodebookTables
from u2qt_core.errors import CheckpointError, InputError

__all__ = ["SequenceEmbedder", "encoder_path", "histories_from_rows", "token_rows", "train_sequence_encoder"]

log = logging.getLogger(__name__)

SEQUENCE_FOLDER = "sequence_encoders"
HASH_BUCKETS = 1 << 20


def encoder_path(model_dir: str | Path, tokenizer_version: str) -> Path:
    """Folder of the sequence encoder trained on ``tokenizer_version``'s codes."""
    return Path(model_dir).expanduser().absolute() / SEQUENCE_FOLDER / tokenizer_version


def token_rows(run: DayRun, first: str, last: str, books: CodebookTables) -> DataFrame:
    """``(user_id, day, source_index, codes)`` of ``user_day_tokens`` between two dates (inclusive);
    ``day`` counts days since 1970-01-01, ``source_index`` indexes ``books.sources``."""
    index = F.create_map(*[item for i, s in enumerate(books.sources) for item in (F.lit(s), F.lit(i))])
    return (run.read(tables.USER_DAY_TOKENS.name)
            .where(F.col("event_date").between(F.to_date(F.lit(first)), F.to_date(F.lit(last))))
            .select("user_id", F.datediff("event_date", F.to_date(F.lit("1970-01-01"))).alias("day"),
                    index[F.col("source")].alias("source_index"), "codes")
            .where(F.col("source_index").isNotNull()))


def histories_from_rows(rows: pd.DataFrame, sources: list[str], max_steps: int):
    """``(user_ids int64 [U], UserTokenHistories)`` of the users in ``rows`` (one row per user,
    source and day: ``user_id``, ``day``, ``source_index``, ``codes``): steps ordered by (day, source
    index), each user keeping its ``max_steps`` most recent ones, packed left and padded to the
    longest; users in ascending id order."""
    import torch

    from u2qt_core.alignment import UserTokenHistories

    if not len(rows):
        raise InputError("no token rows to build histories from")
    users, user_of = np.unique(rows["user_id"].to_numpy(np.int64), return_inverse=True)
    day = rows["day"].to_numpy(np.int64)
    source = rows["source_index"].to_numpy(np.int64)
    codes = np.stack(rows["codes"].to_numpy()).astype(np.int64)
    order = np.lexsort((source, day, user_of))
    user_of, day, source, codes = user_of[order], day[order], source[order], codes[order]
    counts = np.bincount(user_of, minlength=len(users))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(user_of)) - starts[user_of]
    dropped = np.maximum(counts - max_steps, 0)[user_of]
    keep = rank >= dropped
    pos = (rank - dropped)[keep]
    u, width, levels = user_of[keep], int(min(max_steps, counts.max())), codes.shape[1]
    out_codes = np.zeros((len(users), width, levels), dtype=np.int64)
    out_source = np.zeros((len(users), width), dtype=np.int64)
    out_day = np.zeros((len(users), width), dtype=np.int64)
    mask = np.zeros((len(users), width), dtype=bool)
    out_codes[u, pos], out_source[u, pos], out_day[u, pos], mask[u, pos] = codes[keep], source[keep], day[keep], True
    return users, UserTokenHistories(torch.from_numpy(out_codes), torch.from_numpy(out_source),
                                     torch.from_numpy(out_day), torch.from_numpy(mask), list(sources))


def _sampled_rows(run: DayRun, books: CodebookTables) -> tuple[pd.DataFrame, int]:
    """The training users' rows (pandas) and the (approximate) number of users active in the window.

    Two column-pruned scans of the window, nothing materialised: an approximate distinct count
    (HyperLogLog, 2 % error) sizes the hash bucket, then only the bucket's rows are collected; a
    sample that overshoots ``max_users`` is cut on the driver (smallest hashes first)."""
    cfg = run.settings.sequence_encoder
    first = (date.fromisoformat(run.event_date) - timedelta(days=cfg.history_days - 1)).isoformat()
    rows = token_rows(run, first, run.event_date, books)
    active = int(rows.agg(F.approx_count_distinct("user_id", 0.02)).first()[0])
    if active < 2:
        raise InputError(f"user_day_tokens {first}..{run.event_date}: {active} active user(s); "
                         "the sequence encoder needs at least 2 (contrastive losses)")
    buckets = min(HASH_BUCKETS, int(np.ceil(HASH_BUCKETS * cfg.max_users / active)))
    bucket = F.pmod(F.xxhash64("user_id"), F.lit(HASH_BUCKETS))
    sample = rows.where(bucket < buckets).withColumn("_bucket", bucket).toPandas()
    users = sample.drop_duplicates("user_id").sort_values(["_bucket", "user_id"])["user_id"]
    if len(users) > cfg.max_users:
        sample = sample[sample["user_id"].isin(users.iloc[:cfg.max_users])]
    return sample.drop(columns="_bucket").reset_index(drop=True), active


def train_sequence_encoder(run: DayRun) -> dict[str, Any]:
    """Train the sequence encoder on the token histories ending at the run's date and store it for
    the run's tokenizer version (replacing an earlier one). Records step ``train_sequence`` in
    ``run_metrics`` and returns its metrics."""
    import torch

    from pipelines.config.config_loading import load_model
    from u2qt_core.alignment import AlignmentConfig, AlignmentTrainer
    from u2qt_core.alignment.codebooks import ScaledCodebook, rms_scale
    from u2qt_core.bundle import load_bundle

    started = time.monotonic()
    settings, cfg = run.settings, run.settings.sequence_encoder
    config = load_model(AlignmentConfig, settings.resolve(cfg.model))
    if config.max_tokens < cfg.max_steps * run.tokenizer.num_levels:
        raise InputError(f"{cfg.model}: max_tokens {config.max_tokens} < sequence_encoder.max_steps "
                         f"{cfg.max_steps} x {run.tokenizer.num_levels} tokens per step")
    model, version, _ = load_bundle(run.tokenizer.model_dir)
    books = CodebookTables(model)
    check_window(run.read(tables.USER_DAY_TOKENS.name), run.event_date, cfg.history_days,
                 "sequence_encoder.history_days", settings)
    rows, active = _sampled_rows(run, books)
    users, histories = histories_from_rows(rows, books.sources, cfg.max_steps)
    sample = {s: np.stack(rows.loc[rows["source_index"] == i, "codes"].to_numpy()[:2000])
              for i, s in enumerate(books.sources) if (rows["source_index"] == i).any()}
    scale = rms_scale(books, sample, cfg.token_rms)
    log.info("sequence encoder: %d of %d active users, %d steps of at most %d, codes scaled by %.1f",
             len(users), active, int(histories.mask.sum()), cfg.max_steps, scale)
    torch.manual_seed(config.seed)
    trainer = AlignmentTrainer(ScaledCodebook(books, scale), histories, config)
    before = trainer.evaluate()
    trainer.fit()
    after = trainer.evaluate()
    meta = {"tokenizer_version": version, "as_of": run.event_date, "history_days": cfg.history_days,
            "max_steps": cfg.max_steps, "scale": scale, "sources": books.sources,
            "model": trainer.model.config.model_dump(), "training": config.model_dump(),
            "users": len(users), "active_users": active, "loss_before": before, "loss_after": after}
    folder = _write(settings.model_dir, version, trainer.model.state_dict(), meta)
    seconds = time.monotonic() - started
    metrics = {"users": len(users), "active_users": active, "steps": config.steps, "fused_dim": trainer.model.fused_dim,
               "loss_before": before, "loss_after": after, "path": str(folder)}
    run.record("train_sequence", "ok", seconds, metrics)
    log.info("sequence encoder for %s written to %s (%.0f s): loss %.4f -> %.4f", version, folder, seconds,
             before["total"], after["total"])
    return metrics


def _write(model_dir: str, version: str, state: dict, meta: dict) -> Path:
    """Write to a temporary folder, then swap it in for ``encoder_path(model_dir, version)``."""
    import torch

    final = encoder_path(model_dir, version)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        torch.save(state, tmp / "model.pt")
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=float) + "\n")
        old = final.parent / f".old-{uuid.uuid4().hex}"
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class SequenceEmbedder:
    """A stored sequence encoder, ready to embed users: built from :meth:`load`'s picklable
    ``(state, meta)`` so a Spark job can broadcast it."""

    def __init__(self, state: dict, meta: dict) -> None:
        from u2qt_core.alignment import UserSequenceConfig, UserSequenceModel

        self.meta = meta
        self.model = UserSequenceModel(UserSequenceConfig(**meta["model"]))
        self.model.load_state_dict(state)
        self.model.eval()

    @staticmethod
    def load(model_dir: str, tokenizer_version: str) -> tuple[dict, dict]:
        """``(state_dict, meta)`` of the encoder stored for ``tokenizer_version``."""
        import torch

        folder = encoder_path(model_dir, tokenizer_version)
        if not (folder / "model.pt").exists():
            raise CheckpointError(f"no sequence encoder for tokenizer {tokenizer_version} at {folder}: "
                                  f"run `u2qt train-sequence DATE` first (features.representations names fused_embedding)")
        meta = json.loads((folder / "config.json").read_text())
        return torch.load(folder / "model.pt", map_location="cpu", weights_only=True), meta

    @property
    def fused_dim(self) -> int:
        return self.model.fused_dim

    def embed(self, rows: pd.DataFrame, books: CodebookTables, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``(user_ids int64 [U], fused float32 [U, fused_dim])`` of the users in ``rows`` (see
        :func:`histories_from_rows`; every row of a user must be there)."""
        from u2qt_core.alignment import embed_histories
        from u2qt_core.alignment.codebooks import ScaledCodebook

        if books.sources != self.meta["sources"]:
            raise CheckpointError(f"sequence encoder sources {self.meta['sources']} != tokenizer's {books.sources}")
        users, histories = histories_from_rows(rows, books.sources, int(self.meta["max_steps"]))
        return users, embed_histories(self.model, ScaledCodebook(books, float(self.meta["scale"])), histories, batch_size)
