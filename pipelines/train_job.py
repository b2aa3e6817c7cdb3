"""Train the tokenizer on the lake: sample (user, source, day) inputs from ``raw_events`` and
``user_profile``, embed them with the text encoder inside Spark, train the MRQ-VAE on the driver
and save it to ``settings.model_dir``.

The sample is drawn by a seeded hash, so the same lake and seed give the same training set.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines import tables
from pipelines.documents import build_documents, build_tabular_inputs, latest_profiles
from pipelines.inference import inference_spec, make_embed_udf
from pipelines.settings import PipelineSettings
from pipelines.validation import check_profiles, check_raw_events
from u2qt_core.config import ModelPreset, load_model_preset

log = logging.getLogger(__name__)


def sample_inputs(spark: SparkSession, settings: PipelineSettings, *, start_date: str | None = None,
                  end_date: str | None = None, seed: int = 0) -> DataFrame:
    """Valid model inputs ``(user_id, event_date, source, document, features)``, at most
    ``training.max_docs_per_source`` per source, sampled by a seeded hash."""
    sources = settings.sources_config()
    events = tables.read_table(spark, settings, "raw_events")
    if start_date:
        events = events.where(F.col("event_date") >= F.to_date(F.lit(start_date)))
    if end_date:
        events = events.where(F.col("event_date") <= F.to_date(F.lit(end_date)))
    valid = check_raw_events(events, sources, settings.validation).valid
    documents = build_documents(valid, sources)
    user_days = valid.select("user_id", "event_date").distinct()
    last_day = user_days.agg(F.max("event_date")).first()[0]
    profiles = latest_profiles(tables.read_table(spark, settings, "user_profile"), str(last_day) if last_day else "9999-12-31")
    profiles = check_profiles(profiles, sources).valid
    tabular = build_tabular_inputs(profiles.join(user_days, "user_id"), sources)
    inputs = documents.unionByName(tabular)
    pick = Window.partitionBy("source").orderBy(F.xxhash64("user_id", "event_date", F.lit(seed)))
    return (inputs.withColumn("_n", F.row_number().over(pick))
            .where(F.col("_n") <= settings.training.max_docs_per_source).drop("_n"))


def embed_inputs(spark: SparkSession, settings: PipelineSettings, inputs: DataFrame, tabular_sources: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Run the text encoder over ``inputs`` in Spark and collect ``{source: float32 [n, d]}``."""
    embed = make_embed_udf(inference_spec(settings, tabular_sources=tabular_sources))
    rows = (inputs.repartition(settings.inference.partitions, "user_id")
            .select("source", "user_id", "event_date", embed("user_id", "event_date", "source", "document", "features").alias("x"))
            .orderBy("source", "user_id", "event_date")
            .collect())
    out: dict[str, list] = {}
    for row in rows:
        out.setdefault(row["source"], []).append(row["x"])
    return {source: np.asarray(vectors, dtype=np.float32) for source, vectors in out.items()}


def preset_for(settings: PipelineSettings, encoder_dim: int, overrides: dict | None = None) -> ModelPreset:
    """The configured model preset with sources and input widths taken from this pipeline."""
    sources = settings.sources_config()
    dims = {name: encoder_dim for name in sources.text_sources} | {sources.tabular.name: sources.tabular.width}
    merged = {"mrqvae": {"sources": sources.all_sources, "input_dims": dims, "tabular_sources": [sources.tabular.name],
                         "embed_dim": encoder_dim}}
    for key, value in (overrides or {}).items():
        merged.setdefault(key, {}).update(value)
    return load_model_preset(settings.resolve(settings.training.preset), overrides=merged)


def train(spark: SparkSession, settings: PipelineSettings, *, start_date: str | None = None,
          end_date: str | None = None, preset_overrides: dict | None = None) -> dict:
    """Sample, embed, train, save. Returns a summary with the new ``tokenizer_version``."""
    from u2qt_core.checkpoint import save_tokenizer
    from u2qt_core.encoders.text import get_text_encoder
    from u2qt_core.metrics import codebook_metrics
    from u2qt_core.training import train_mrqvae

    import torch

    started = time.monotonic()
    if settings.training.torch_threads > 0:
        torch.set_num_threads(settings.training.torch_threads)
    encoder_dim = get_text_encoder(settings.encoder).dim
    preset = preset_for(settings, encoder_dim, preset_overrides)
    inputs = sample_inputs(spark, settings, start_date=start_date, end_date=end_date, seed=preset.train.seed)
    embeddings = embed_inputs(spark, settings, inputs, tuple(preset.mrqvae.tabular_sources))
    counts = {source: int(len(x)) for source, x in embeddings.items()}
    log.info("training sample: %s", counts)
    embedded = time.monotonic()
    model_dir = Path(settings.model_dir).expanduser().absolute()
    result = train_mrqvae(embeddings, preset, out_dir=model_dir.parent / f"{model_dir.name}.checkpoints", progress=True)
    metrics = codebook_metrics(result.model, embeddings)
    version = save_tokenizer(result.model, model_dir, extra={"training_rows": counts, "preset": settings.training.preset})
    summary = {
        "tokenizer_version": version, "model_dir": str(model_dir), "training_rows": counts,
        "steps": result.steps, "embed_seconds": embedded - started,
        "train_seconds": time.monotonic() - embedded, "metrics": metrics,
    }
    (model_dir / "training_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    log.info("trained tokenizer %s in %.0f s -> %s", version, time.monotonic() - started, model_dir)
    return summary
