"""The U²QT-AAAI variant of ``u2qt paper-eval``, evaluated beside the main (FOUNDv2) tokenizer.

1. every (user, source, day) input of the history window becomes a sequence (a text document:
   its lines, each embedded by the text encoder in the Spark line UDF; the tabular source: its
   features one by one), cached in ``cache_dir`` like the document embeddings
   (:func:`embed_all_sequences`);
2. the tokenizer of ``conf/eval.yaml`` ``u2qt.preset`` trains end to end on all user-days, then
   codes every user-day; its codes are aligned to the evaluation's input rows, so the probes,
   the bootstrap resamples and the storage layout are the main tokenizer's;
3. costs: training wall / CPU seconds per 1,000 users; inference CPU seconds per 1,000
   documents of FOUNDv2, U²QT and the continuous embeddings, measured with
   ``time.process_time`` on the driver around the night's own per-chunk code
   (:class:`~pipelines.night.inference.TokenizerRuntime`,
   :class:`~pipelines.night.u2qt_inference.SequenceRuntime`) over the same seeded user-days.

Cost: line encoding is one encoder pass per distinct line (short texts), paid once per world.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from pipelines.config.settings import PipelineSettings
from pipelines.evaluation.eval_inputs import EmbeddedInputs, cache_key
from pipelines.night.inference import InferenceSpec, TokenizerRuntime, inference_spec
from pipelines.tokenizer.train_job import preset_for
from u2qt_core.config import ModelPreset
from u2qt_core.evaluation.config import EvalConfig
from u2qt_core.u2qt_training import SequenceSample

log = logging.getLogger(__name__)


@dataclass
class SequenceInputs:
    """Every user-day of the history window as U²QT sequences: ``users`` int64 ``[N]``,
    ``days`` int32 ``[N]`` (days since the world's start), ``sample`` the N user-days' ragged
    sequences; ``embed_seconds`` the wall time of the line encoding (when it ran)."""

    users: np.ndarray
    days: np.ndarray
    sample: SequenceSample
    embed_seconds: float


def u2qt_preset(settings: PipelineSettings, cfg: EvalConfig, encoder_dim: int) -> ModelPreset:
    """``cfg.u2qt.preset`` + overrides with this pipeline's sources and widths (and the eval's seed)."""
    steps = cfg.u2qt.steps
    overrides = {**cfg.u2qt.overrides,
                 "train": {**cfg.u2qt.overrides.get("train", {}), "steps": steps, "seed": cfg.seed,
                           "checkpoint_every": 0, "log_every": max(steps // 4, 1)}}
    eval_settings = settings.model_copy(
        update={"training": settings.training.model_copy(update={"preset": cfg.u2qt.preset})})
    return preset_for(eval_settings, encoder_dim, overrides)


def embed_all_sequences(spark: SparkSession, settings: PipelineSettings, world_cfg, cache_dir: Path,
                        preset: ModelPreset) -> SequenceInputs:
    """All inputs of the world's history window as line sequences (cached in ``cache_dir``)."""
    from pipelines.night.u2qt_inference import embed_sequences
    from pipelines.tokenizer.sample import sample_inputs

    front = preset.u2qt
    path = cache_dir / f"sequences-{cache_key(settings, world_cfg)}.npz"
    if path.exists():
        log.info("line-sequence cache hit: %s", path)
        data = np.load(path)
        sample = SequenceSample(values={s: data[f"{s}__values"] for s in front.input_dims},
                                offsets={s: data[f"{s}__offsets"] for s in front.input_dims})
        return SequenceInputs(data["users"], data["days"], sample, float(data["embed_seconds"]))
    started = time.monotonic()
    everything = settings.model_copy(update={"training": settings.training.model_copy(update={"max_docs_per_source": 10**9})})
    inputs = sample_inputs(spark, everything, start_date=str(world_cfg.start_date), end_date=str(world_cfg.end_date))
    spec = inference_spec(settings, tabular_sources=tuple(front.tabular_sources))
    keys, days = embed_sequences(inputs, spec, settings.inference.partitions)
    sample = SequenceSample.from_user_days(days, front.input_dims)
    start = pd.Timestamp(world_cfg.start_date)
    users = np.array([k[0] for k in keys], dtype=np.int64)
    day_numbers = ((pd.to_datetime([k[1] for k in keys]) - start).days).to_numpy(np.int32)
    seconds = time.monotonic() - started
    cache_dir.mkdir(parents=True, exist_ok=True)
    arrays = {f"{s}__values": v for s, v in sample.values.items()}
    arrays.update({f"{s}__offsets": o for s, o in sample.offsets.items()})
    np.savez(path, users=users, days=day_numbers, embed_seconds=np.float64(seconds), **arrays)
    log.info("embedded the lines of %d user-days in %.0f s (cached at %s)", len(sample), seconds, path)
    return SequenceInputs(users, day_numbers, sample, seconds)


def _inference_rows(emb: EmbeddedInputs, tabular: str, user_days: int, seed: int) -> pd.DataFrame:
    """``(user_id, day, source, document, features)`` of ``user_days`` seeded user-days, every
    source they hold (documents from the cache, tabular features = their inputs)."""
    frames = [emb.documents[["user_id", "day", "source", "document"]].assign(features=None)]
    frames.append(pd.DataFrame({"user_id": emb.users[tabular], "day": emb.days[tabular], "source": tabular,
                                "document": None, "features": list(emb.x[tabular])}))
    rows = pd.concat(frames, ignore_index=True)
    keys = rows[["user_id", "day"]].drop_duplicates().sort_values(["user_id", "day"])
    picked = keys.sample(n=min(user_days, len(keys)), random_state=seed)
    return rows.merge(picked, on=["user_id", "day"]).sort_values(["user_id", "day", "source"]).reset_index(drop=True)


def _cpu(work: Callable[[], Any]) -> tuple[float, float]:
    """``(process CPU seconds, wall seconds)`` of ``work()``."""
    cpu, wall = time.process_time(), time.monotonic()
    work()
    return time.process_time() - cpu, time.monotonic() - wall


def time_inference(spec: InferenceSpec, foundv2_model, u2qt_model, rows: pd.DataFrame, torch_threads: int) -> dict:
    """CPU seconds of the night's work on ``rows`` (:func:`_inference_rows`): the continuous
    embeddings alone, FOUNDv2 (embed each document, quantize) and U²QT (embed each line, front
    end, quantize per user-day), each per 1,000 documents (text rows) and per 1,000 user-days."""
    import torch

    from pipelines.night.u2qt_inference import SequenceRuntime
    from u2qt_core.evaluation.variants import per_thousand

    found = TokenizerRuntime.from_model(spec, foundv2_model)
    seq = SequenceRuntime.from_model(spec, u2qt_model)
    torch.set_num_threads(torch_threads)      # the embedder sets the inference setting's threads
    columns = [rows[c].to_numpy(dtype=object) for c in ("source", "document", "features")]
    chunks = [slice(i, i + spec.batch_rows) for i in range(0, len(rows), spec.batch_rows)]
    found.embedder.embed(*[c[:4] for c in columns])          # warm-up: the encoder loads once, untimed
    groups = [g for _, g in rows.groupby(["user_id", "day"], sort=True)]
    per_chunk = max(1, spec.batch_rows // max(1, len(rows) // max(1, len(groups))))
    day_chunks = [groups[i:i + per_chunk] for i in range(0, len(groups), per_chunk)]

    def days_of(chunk: list[pd.DataFrame]) -> tuple[list[np.ndarray], ...]:
        return tuple([g[c].to_numpy(dtype=object) for g in chunk] for c in ("source", "document", "features"))

    measured = {
        "continuous": _cpu(lambda: [found.embedder.embed(*[c[s] for c in columns]) for s in chunks]),
        "foundv2": _cpu(lambda: [found.tokenize_rows(*[c[s] for c in columns]) for s in chunks]),
        "u2qt": _cpu(lambda: [seq.tokenize_days(*days_of(chunk)) for chunk in day_chunks]),
    }
    documents = int(rows["document"].notna().sum())
    out = {"documents": documents, "user_days": len(groups), "rows": len(rows)}
    for name, (cpu, wall) in measured.items():
        out[name] = {"cpu_seconds": cpu, "wall_seconds": wall,
                     "inference_cpu_per_1k_documents": per_thousand(cpu, documents),
                     "inference_cpu_per_1k_user_days": per_thousand(cpu, len(groups))}
    return out


def run_u2qt_variant(spark: SparkSession, settings: PipelineSettings, cfg: EvalConfig, world_cfg, emb: EmbeddedInputs,
                     *, main, main_batch: int, cache_dir: Path, encoder_dim: int, tabular: str, sources: list[str],
                     rows_user: dict[str, np.ndarray], n_users: int, probe: Callable,
                     storage: Callable[[dict[str, np.ndarray]], dict]) -> tuple[dict[str, dict], dict]:
    """Train, tokenize, probe and cost the U²QT variant. ``storage(codes)`` measures a token
    table of the input rows. Returns ``(representations to add, results["u2qt"])``."""
    from u2qt_core.evaluation.tokenizers import Tokenized, token_features
    from u2qt_core.evaluation.variants import align_codes, tokenizer_costs
    from u2qt_core.metrics import codebook_metrics
    from u2qt_core.u2qt_training import pooled_inputs, train_u2qt

    import torch

    preset = u2qt_preset(settings, cfg, encoder_dim)
    seqs = embed_all_sequences(spark, settings, world_cfg, cache_dir, preset)
    cpu, wall = time.process_time(), time.monotonic()
    result = train_u2qt(seqs.sample, preset, progress=True)
    train_cpu, train_wall = time.process_time() - cpu, time.monotonic() - wall
    model = result.model.eval()
    day_codes: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, len(seqs.sample), 256):
            batch = seqs.sample.batch(np.arange(start, min(start + 256, len(seqs.sample))), preset.u2qt.max_len)
            for source, (codes, _) in model.quantize_measured(batch).items():
                day_codes.setdefault(source, []).append(codes.numpy())
    codes = align_codes(seqs.users, seqs.days, {s: np.concatenate(c) for s, c in day_codes.items()},
                        {s: emb.users[s] for s in emb.x}, {s: emb.days[s] for s in emb.x})
    metrics = codebook_metrics(model.mrqvae, pooled_inputs(model, seqs.sample))
    tok = Tokenized(name="u2qt", model=model.mrqvae, codes=codes, metrics=metrics, seconds=train_wall,
                    train_seconds=train_wall, train_cpu_seconds=train_cpu)
    p = cfg.probe
    reps = {"u2qt_bag": {"label": "U²QT-AAAI tokens: bag of codes",
                         **probe(token_features(tok, rows_user, n_users, sources, "bag", p.bag_transform))},
            "u2qt_vectors": {"label": "U²QT-AAAI tokens: mean quantized (codebook) vector per source",
                             **probe(token_features(tok, rows_user, n_users, sources, "vectors"))}}

    users = len(np.unique(seqs.users))
    m, u = cfg.tokenizer, preset
    costs = {"foundv2": tokenizer_costs(main.metrics, train_seconds=main.train_seconds, users=users,
                                        train_cpu_seconds=main.train_cpu_seconds, steps=m.steps,
                                        batch=f"{main_batch} input rows"),
             "u2qt": tokenizer_costs(metrics, train_seconds=train_wall, train_cpu_seconds=train_cpu, users=users,
                                     steps=u.train.steps, batch=f"{u.train.batch_size} user-days"),
             "continuous": {}}
    spec = inference_spec(settings, tabular_sources=(tabular,))
    timing = time_inference(spec, main.model, model, _inference_rows(emb, tabular, cfg.u2qt.inference_user_days, cfg.seed),
                            cfg.torch_threads)
    for name in costs:
        costs[name]["inference_cpu_per_1k_documents"] = timing[name]["inference_cpu_per_1k_documents"]
    sizes = storage(codes)
    for name in costs:
        costs[name]["bytes_per_user_day"] = sizes[name]["data_bytes_per_user_day"]
        costs[name]["total_bytes_per_user_day"] = sizes[name]["total_bytes_per_user_day"]
    line_bytes = sum(v.nbytes for v in seqs.sample.values.values())
    fu = preset.u2qt
    variant = {
        "description": (f"U²QT-AAAI: {cfg.u2qt.preset}, {fu.encoder_layers}-layer encoder / {fu.qformer_layers}-layer "
                        f"Q-Former of width {fu.hidden}, {fu.num_queries} queries, max {fu.max_len} elements per "
                        f"sequence; MRQ-VAE {u.mrqvae.shared_levels} shared + {u.mrqvae.specific_levels} specific "
                        f"levels of {u.mrqvae.num_codes} codes x {u.mrqvae.code_dim}; {u.train.steps} steps of "
                        f"{u.train.batch_size} user-days; {len(seqs.sample)} user-days, {users} users."),
        "costs": costs, "inference": timing, "storage": sizes, "metrics": metrics, "history": result.history,
        "line_embed_seconds": seqs.embed_seconds, "user_days": len(seqs.sample),
        "line_sequence_float_bytes_per_user_day": line_bytes / max(1, len(seqs.sample)),
        "sequence_elements": {s: int(len(v)) for s, v in seqs.sample.values.items()},
    }
    return reps, variant
