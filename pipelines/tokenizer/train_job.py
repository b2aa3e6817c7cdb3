"""Train the tokenizer on the lake: sample (user, source, day) inputs from ``raw_events`` and
``user_profile``, embed them with the text encoder inside Spark, train the MRQ-VAE on the driver,
save it as a new immutable bundle ``<model_dir>/bundles/<version>/`` (:mod:`u2qt_core.bundle`)
and register it with its training metrics (:mod:`pipelines.tokenizer.registry`). Nothing goes live: a
version is used by the nights only after ``u2qt evaluate`` and ``u2qt promote``.

The bundle's contract records the numeric path the sample was embedded on (device, precision,
runtime: :mod:`pipelines.night.numeric_path`); nights on another path are refused unless
``u2qt evaluate`` validated it.

The sample is drawn by a seeded hash, so the same lake and seed give the same training set;
without an end date the last ``gates.heldout_days`` days are left out (``u2qt evaluate`` uses them).
"""
from __future__ import annotations

import logging
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.lake import tables
from pipelines.lake.lake import Lake
from pipelines.night.inference import inference_spec, make_embed_udf
from pipelines.runtime.progress import spark_progress
from pipelines.tokenizer.sample import sample_inputs
from pipelines.config.settings import PipelineSettings
from u2qt_core.config import ModelPreset, load_model_preset
from u2qt_core.errors import U2QTError
from u2qt_core.numeric_path import NumericPath

TRAINING_FOLDER = "training"   # under model_dir, beside bundles/ and the registry

log = logging.getLogger(__name__)


def embed_inputs(spark: SparkSession, settings: PipelineSettings, inputs: DataFrame, tabular_sources: tuple[str, ...],
                 numeric_path: NumericPath | None = None) -> dict[str, np.ndarray]:
    """Run the text encoder over ``inputs`` in Spark and collect ``{source: float32 [n, d]}``
    (rows of a source ordered by user and date), on ``numeric_path`` (default: the settings')."""
    embed = make_embed_udf(inference_spec(settings, tabular_sources=tabular_sources, numeric_path=numeric_path))
    with spark_progress(spark, "embed the training sample"):
        rows = (inputs.repartition(settings.inference.partitions, "user_id")
                .select("source", "user_id", "event_date", embed("user_id", "event_date", "source", "document", "features").alias("x"))
                .orderBy("source", "user_id", "event_date")
                .collect())
    out: dict[str, list] = {}
    for row in rows:
        out.setdefault(row["source"], []).append(row["x"])
    return {source: np.asarray(vectors, dtype=np.float32) for source, vectors in out.items()}


def sample_truncation(settings: PipelineSettings, inputs: DataFrame) -> dict[str, dict]:
    """What ``encoder.max_length`` cut from the training sample's documents, per text source
    (:func:`pipelines.night.truncation.token_report`); a warning per source over
    ``quality.warn_truncated_share``."""
    from pipelines.night.truncation import token_report

    text = list(settings.sources_config().text_sources)
    documents: dict[str, list[str]] = {}
    for row in inputs.where(F.col("source").isin(text)).select("source", "document").collect():
        documents.setdefault(row["source"], []).append(row["document"])
    report = token_report(settings, documents)
    for source, t in report.items():
        if t["truncated_share"] > settings.quality.warn_truncated_share:
            log.warning("training sample: %.1f%% of %s's %d documents exceed encoder.max_length=%d tokens (%.1f%% of "
                        "their tokens cut; p90 %d tokens): `u2qt check-inputs` suggests settings", 100 * t["truncated_share"],
                        source, t["documents"], settings.encoder.max_length, 100 * t["tokens_cut_share"], t["tokens_p90"])
    return report


def preset_for(settings: PipelineSettings, encoder_dim: int, overrides: dict | None = None) -> ModelPreset:
    """The configured model preset (architecture) with the sources and input widths of this
    pipeline's sources config (:meth:`SourcesConfig.layout`); ``overrides`` merge last."""
    layout = settings.sources_config().layout(encoder_dim)
    return load_model_preset(settings.resolve(settings.training.preset), overrides, layout=layout)


def heldout_dates(spark: SparkSession, settings: PipelineSettings) -> list[str]:
    """The last ``gates.heldout_days`` dates of ``raw_events`` (what training leaves out)."""
    raw = Lake(spark, settings)
    rows = (raw.read(tables.RAW_EVENTS.name).select("event_date").distinct()
            .orderBy(F.col("event_date").desc()).limit(settings.gates.heldout_days + 1).collect())
    dates = sorted(str(r["event_date"]) for r in rows)
    if len(dates) <= settings.gates.heldout_days:
        raise U2QTError(f"raw_events at {raw.path(tables.RAW_EVENTS.name)} holds {len(dates)} date(s): "
                        f"gates.heldout_days={settings.gates.heldout_days} would leave nothing to train on")
    return dates[1:]


def training_metrics(metrics: dict, history: list[dict]) -> dict[str, float]:
    """The flat figures registered with a version: final losses, utilization and perplexity per
    level, collision rate, reconstruction error and shared-code coverage per source."""
    flat: dict[str, float] = {}
    if history:
        flat.update({k: float(history[-1][k]) for k in ("loss", "recon_loss", "rq_loss") if k in history[-1]})
    for level in metrics["per_level"]:
        flat[f"utilization_l{level['level']}"] = level["utilization"]
        flat[f"perplexity_l{level['level']}"] = level["perplexity"]
    for source, entry in metrics["per_source"].items():
        flat[f"collision_rate.{source}"] = entry["collision_rate"]
        flat[f"recon_mse.{source}"] = entry["recon_mse"]
        for level, coverage in entry.get("shared_coverage", {}).items():
            flat[f"shared_coverage_l{level}.{source}"] = coverage
    return flat


def train(spark: SparkSession, settings: PipelineSettings, *, start_date: str | None = None,
          end_date: str | None = None, preset_overrides: dict | None = None) -> dict:
    """Sample, embed, train, write the bundle, register it. Returns a summary with the new
    ``tokenizer_version`` (not promoted: see :func:`pipelines.tokenizer.registry.promote`)."""
    from pipelines.tokenizer import registry
    from pipelines.night.day_run import night_contract
    from pipelines.night.numeric_path import planned_path
    from u2qt_core.bundle import write_bundle
    from u2qt_core.code_stats import training_code_stats
    from u2qt_core.encoders.text import get_text_encoder
    from u2qt_core.metrics import codebook_metrics
    from u2qt_core.training import train_mrqvae

    import torch

    started = time.monotonic()
    if settings.training.torch_threads > 0:
        torch.set_num_threads(settings.training.torch_threads)
    encoder_dim = get_text_encoder(settings.encoder).dim
    preset = preset_for(settings, encoder_dim, preset_overrides)
    path = planned_path(settings, spark)
    contract = {**night_contract(settings), "numeric_path": path.as_dict()}
    if end_date is None:
        end_date = (date.fromisoformat(heldout_dates(spark, settings)[0]) - timedelta(days=1)).isoformat()
    inputs = sample_inputs(spark, settings, start_date=start_date, end_date=end_date, seed=preset.train.seed).persist()
    truncation = sample_truncation(settings, inputs)
    model_dir = Path(settings.model_dir).expanduser().absolute()
    if preset.architecture == "u2qt_aaai":
        from pipelines.tokenizer.u2qt_sample import train_on_sample

        # the lines embedded in Spark, the whole model trained end to end; `embeddings` are then
        # the front end's pooled outputs, what the MRQ-VAE quantizes
        result, embeddings = train_on_sample(spark, settings, inputs, preset, path)
        embedded = time.monotonic()   # embedding and training interleave less cleanly here: counted as training
    else:
        embeddings = embed_inputs(spark, settings, inputs, tuple(preset.mrqvae.tabular_sources), path)
        embedded = time.monotonic()
        # checkpoints (and a resume after a crash) inside model_dir: <model_dir>/training/checkpoints/
        result = train_mrqvae(embeddings, preset, out_dir=model_dir / TRAINING_FOLDER, progress=True)
    inputs.unpersist()
    counts = {source: int(len(x)) for source, x in embeddings.items()}
    log.info("training sample: %s, embedded on numeric path %s", counts, path)
    quantizer = getattr(result.model, "mrqvae", result.model)   # a U²QT tokenizer's MRQ-VAE
    metrics = codebook_metrics(quantizer, embeddings)
    # the codes of the training sample per source and level: what the nights' drift is measured against
    code_stats = training_code_stats(quantizer.eval(), embeddings, settings.drift.top_mass)
    flat = training_metrics(metrics, result.history)
    summary = {
        "model_dir": str(model_dir), "training_rows": counts, "start_date": start_date, "end_date": end_date,
        "steps": result.steps, "embed_seconds": embedded - started, "truncation": truncation,
        "train_seconds": time.monotonic() - embedded, "metrics": metrics, "training_metrics": flat,
    }
    version, bundle = write_bundle(result.model, model_dir, contract, summary=summary, code_stats=code_stats,
                                   extra={"training_rows": counts, "preset": settings.training.preset})
    entry = registry.register(settings, version, bundle, flat, {
        "preset": settings.training.preset, "architecture": preset.architecture,
        "start_date": str(start_date), "end_date": str(end_date),
        "steps": str(result.steps), "encoder": contract["encoder"]["model"],
        "numeric_path": path.label,
        **{f"rows.{s}": str(n) for s, n in counts.items()}})
    summary.update(tokenizer_version=version, bundle=str(bundle), registry_version=entry.registry_version,
                   retrain_of=registry.record_retraining(settings, entry))
    log.info("trained tokenizer %s in %.0f s -> %s (registry version %s, not promoted)", version,
             time.monotonic() - started, bundle, entry.registry_version)
    return summary
