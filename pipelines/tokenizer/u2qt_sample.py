"""The U²QT-AAAI tokenizer's side of training and the promotion gates: the sample's documents
become line sequences in Spark (:func:`pipelines.night.u2qt_inference.embed_sequences`), the model
trains on the driver (:func:`u2qt_core.u2qt_training.train_u2qt`), and what FOUNDv2 calls the
MRQ-VAE inputs -- the vectors codebook metrics, code statistics and the gates read -- are the
front end's pooled outputs (``bar H_s``)."""
from __future__ import annotations

import logging

import numpy as np
import torch
from pyspark.sql import DataFrame, SparkSession

from pipelines.config.settings import PipelineSettings
from pipelines.night.inference import inference_spec
from pipelines.night.u2qt_inference import embed_sequences
from pipelines.runtime.progress import spark_progress
from u2qt_core.config import ModelPreset
from u2qt_core.numeric_path import NumericPath
from u2qt_core.training import TrainResult
from u2qt_core.u2qt_model import U2QTTokenizer
from u2qt_core.u2qt_training import SequenceSample, pooled_inputs, train_u2qt

log = logging.getLogger(__name__)


def _sequences(spark: SparkSession, settings: PipelineSettings, inputs: DataFrame, tabular: list[str],
               input_dims: dict[str, int], path: NumericPath | None, what: str):
    spec = inference_spec(settings, tabular_sources=tuple(tabular), numeric_path=path)
    with spark_progress(spark, f"embed the lines of {what}"):
        keys, days = embed_sequences(inputs, spec, settings.inference.partitions)
    return keys, SequenceSample.from_user_days(days, input_dims)


def train_on_sample(spark: SparkSession, settings: PipelineSettings, inputs: DataFrame, preset: ModelPreset,
                    path: NumericPath | None) -> tuple[TrainResult, dict[str, np.ndarray]]:
    """Train a U²QT-AAAI tokenizer on the sampled ``inputs``; returns the result and the pooled
    MRQ-VAE inputs of the sample ``{source: float32 [n, pooled_dim]}``."""
    _, sample = _sequences(spark, settings, inputs, preset.u2qt.tabular_sources, preset.u2qt.input_dims, path,
                           "the training sample")
    log.info("U²QT training sample: %d user-days, user-days per source %s", len(sample), sample.counts())
    result = train_u2qt(sample, preset, progress=True)
    return result, pooled_inputs(result.model, sample)


def pooled_rows(spark: SparkSession, settings: PipelineSettings, inputs: DataFrame, model: U2QTTokenizer,
                path: NumericPath | None, batch_size: int = 256) -> list[dict]:
    """``{user_id, event_date, source, x}`` per (user, source, day) of ``inputs``, ``x`` the pooled
    vector the MRQ-VAE quantizes, ordered by source, date and user (what the gates read)."""
    front = model.frontend_config
    keys, sample = _sequences(spark, settings, inputs, front.tabular_sources, front.input_dims, path, "the held-out days")
    rows: list[dict] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(sample), batch_size):
            batch = sample.batch(np.arange(start, min(start + batch_size, len(sample))), front.max_len)
            for source, vectors in model.pooled(batch).items():
                for i in np.flatnonzero(batch.present(source).numpy()):
                    user_id, event_date = keys[start + i]
                    rows.append({"user_id": user_id, "event_date": event_date, "source": source,
                                 "x": vectors[i].numpy()})
    return sorted(rows, key=lambda r: (r["source"], r["event_date"], r["user_id"]))
