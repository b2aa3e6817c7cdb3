"""Train the tokenizer on the lake: sample (user, source, day) inputs from ``raw_events`` and
``user_profile``, embed them with the text encoder inside Spark, train the MRQ-VAE on the driver,
save it as a new immutable bundle ``<model_dir>/bundles/<version>/`` (:mod:`u2qt_core.bundle`)
and register it with its training metrics (:mod:`pipelines.tokenizer.registry`). Nothing goes live: a
version is used by the nights only after ``u2qt evaluate`` and ``u2qt promote``.

The sample is drawn by a seeded hash, so the same lake and seed give the same training set;
without an end date the last ``gates.heldout_days`` days are left out (``u2qt evaluate`` uses them).
"""
from __future__ import annotations

import logging
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.lake import tables
from pipelines.night.documents import build_documents, build_tabular_inputs, profiles_as_of
from pipelines.night.inference import inference_spec, make_embed_udf
from pipelines.runtime.progress import spark_progress
from pipelines.config.settings import PipelineSettings
from pipelines.night.validation import check_profiles, check_raw_events
from u2qt_core.config import ModelPreset, load_model_preset
from u2qt_core.errors import U2QTError

TRAINING_FOLDER = "training"   # under model_dir, beside bundles/ and the registry

log = logging.getLogger(__name__)


def sample_inputs(spark: SparkSession, settings: PipelineSettings, *, start_date: str | None = None,
                  end_date: str | None = None, seed: int = 0, max_per_source: int | None = None) -> DataFrame:
    """Valid model inputs ``(user_id, event_date, source, document, features)``, at most
    ``max_per_source`` (default ``training.max_docs_per_source``; 0: all) per source, sampled by
    a seeded hash."""
    sources = settings.sources_config()
    events = tables.read_table(spark, settings, "raw_events")
    if start_date:
        events = events.where(F.col("event_date") >= F.to_date(F.lit(start_date)))
    if end_date:
        events = events.where(F.col("event_date") <= F.to_date(F.lit(end_date)))
    valid = check_raw_events(events, sources, settings.validation).valid
    documents = build_documents(valid, sources)
    user_days = valid.select("user_id", "event_date").distinct()
    # each day's text with that day's profile (as the night pairs them), not the user's latest
    profiles = profiles_as_of(tables.read_table(spark, settings, "user_profile"), user_days)
    tabular = build_tabular_inputs(check_profiles(profiles, sources).valid, sources)
    inputs = documents.unionByName(tabular)
    cap = settings.training.max_docs_per_source if max_per_source is None else max_per_source
    if cap == 0:
        return inputs
    pick = Window.partitionBy("source").orderBy(F.xxhash64("user_id", "event_date", F.lit(seed)))
    return (inputs.withColumn("_n", F.row_number().over(pick))
            .where(F.col("_n") <= cap).drop("_n"))


def embed_inputs(spark: SparkSession, settings: PipelineSettings, inputs: DataFrame, tabular_sources: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Run the text encoder over ``inputs`` in Spark and collect ``{source: float32 [n, d]}``."""
    embed = make_embed_udf(inference_spec(settings, tabular_sources=tabular_sources))
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
    rows = (tables.read_table(spark, settings, "raw_events").select("event_date").distinct()
            .orderBy(F.col("event_date").desc()).limit(settings.gates.heldout_days + 1).collect())
    dates = sorted(str(r["event_date"]) for r in rows)
    if len(dates) <= settings.gates.heldout_days:
        raise U2QTError(f"raw_events at {settings.table_path('raw_events')} holds {len(dates)} date(s): "
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
    contract = night_contract(settings)
    if end_date is None:
        end_date = (date.fromisoformat(heldout_dates(spark, settings)[0]) - timedelta(days=1)).isoformat()
    inputs = sample_inputs(spark, settings, start_date=start_date, end_date=end_date, seed=preset.train.seed).persist()
    embeddings = embed_inputs(spark, settings, inputs, tuple(preset.mrqvae.tabular_sources))
    counts = {source: int(len(x)) for source, x in embeddings.items()}
    log.info("training sample: %s", counts)
    truncation = sample_truncation(settings, inputs)
    inputs.unpersist()
    embedded = time.monotonic()
    model_dir = Path(settings.model_dir).expanduser().absolute()
    # checkpoints (and a resume after a crash) inside model_dir: <model_dir>/training/checkpoints/
    result = train_mrqvae(embeddings, preset, out_dir=model_dir / TRAINING_FOLDER, progress=True)
    metrics = codebook_metrics(result.model, embeddings)
    # the codes of the training sample per source and level: what the nights' drift is measured against
    code_stats = training_code_stats(result.model.eval(), embeddings, settings.drift.top_mass)
    flat = training_metrics(metrics, result.history)
    summary = {
        "model_dir": str(model_dir), "training_rows": counts, "start_date": start_date, "end_date": end_date,
        "steps": result.steps, "embed_seconds": embedded - started, "truncation": truncation,
        "train_seconds": time.monotonic() - embedded, "metrics": metrics, "training_metrics": flat,
    }
    version, bundle = write_bundle(result.model, model_dir, contract, summary=summary, code_stats=code_stats,
                                   extra={"training_rows": counts, "preset": settings.training.preset})
    entry = registry.register(settings, version, bundle, flat, {
        "preset": settings.training.preset, "start_date": str(start_date), "end_date": str(end_date),
        "steps": str(result.steps), "encoder": contract["encoder"]["model"],
        **{f"rows.{s}": str(n) for s, n in counts.items()}})
    summary.update(tokenizer_version=version, bundle=str(bundle), registry_version=entry.registry_version)
    log.info("trained tokenizer %s in %.0f s -> %s (registry version %s, not promoted)", version,
             time.monotonic() - started, bundle, entry.registry_version)
    return summary
