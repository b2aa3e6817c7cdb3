"""How far another numeric path keeps a tokenizer version's codes (part of ``u2qt evaluate``).

A sample of held-out documents (at most ``gates.path_sample_docs`` per text source, drawn by the
training sample's seeded hash, so the same user-days across sources) is embedded in Spark once
on the bundle's own numeric path and once on each path of ``gates.validate_paths`` (the workers
are pinned to that path: a ``cuda`` path needs GPU executors), and tokenized on the driver with
the version's MRQ-VAE. Per path (:func:`agreement`):

* ``agreement``: the share of documents whose full code tuple (all ``L`` levels) is the same on
  both paths; this is what a night compares with ``gates.min_path_agreement``;
* ``per_level``: the share whose code at level ``l`` is the same; ``prefix``: the share whose
  first ``l`` levels are the same (its last entry is ``agreement``);
* ``user_day_agreement``: the share of sampled (user, day)s whose codes of every sampled text
  source are the same (the history's token tuple, tabular codes aside: the encoder does not
  touch them); ``per_source``: ``agreement`` per text source.

The figures are stored on the registry version (:func:`pipelines.tokenizer.registry.record_path_agreement`);
bundles are immutable.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config.settings import PipelineSettings
from pipelines.night.inference import inference_spec, make_embed_udf
from pipelines.runtime.progress import spark_progress
from pipelines.tokenizer.sample import sample_inputs
from u2qt_core.numeric_path import NumericPath

log = logging.getLogger(__name__)

Keyed = dict[str, tuple[list[tuple[int, str]], np.ndarray]]   # source -> ([(user, day)], codes int [n, L])


def agreement(reference: Keyed, other: Keyed) -> dict:
    """The agreement figures (module doc) of ``other``'s codes with ``reference``'s; both hold the
    same sources and keys in the same order."""
    same_docs, per_source, days = [], {}, {}
    for source, (keys, codes) in reference.items():
        other_keys, other_codes = other[source]
        if other_keys != keys:
            raise ValueError(f"source {source}: the two paths' samples hold different rows")
        same = np.asarray(codes) == np.asarray(other_codes)          # [n, L]
        same_docs.append(same)
        per_source[source] = float(same.all(axis=1).mean()) if len(same) else 1.0
        for key, row in zip(keys, same.all(axis=1)):
            days[key] = days.get(key, True) and bool(row)
    same = np.concatenate(same_docs) if same_docs else np.zeros((0, 0), dtype=bool)
    if len(same) == 0:
        return {"documents": 0, "agreement": 1.0, "per_level": [], "prefix": [], "user_day_agreement": 1.0,
                "user_days": 0, "per_source": per_source}
    prefix = np.cumprod(same, axis=1).mean(axis=0)
    return {
        "documents": int(len(same)), "agreement": float(same.all(axis=1).mean()),
        "per_level": [float(v) for v in same.mean(axis=0)], "prefix": [float(v) for v in prefix],
        "user_day_agreement": float(np.mean(list(days.values()))), "user_days": len(days), "per_source": per_source,
    }


def _codes(spark: SparkSession, settings: PipelineSettings, model, inputs, tabular: tuple[str, ...],
           path: NumericPath) -> Keyed:
    """Embed ``inputs`` on ``path`` in Spark and tokenize them on the driver."""
    import torch

    embed = make_embed_udf(inference_spec(settings, tabular_sources=tabular, numeric_path=path))
    with spark_progress(spark, f"embed the path sample on {path}"):
        rows = (inputs.repartition(settings.inference.partitions, "user_id")
                .select("source", "user_id", "event_date",
                        embed("user_id", "event_date", "source", "document", "features").alias("x"))
                .orderBy("source", "user_id", "event_date").collect())
    grouped: dict[str, list] = {}
    for row in rows:
        grouped.setdefault(row["source"], []).append(row)
    out: Keyed = {}
    with torch.no_grad():
        for source, source_rows in grouped.items():
            x = torch.from_numpy(np.asarray([r["x"] for r in source_rows], dtype=np.float32))
            codes = model.quantize(x, source).cpu().numpy().astype(np.int64)
            out[source] = ([(int(r["user_id"]), str(r["event_date"])) for r in source_rows], codes)
    return out


def measure_paths(spark: SparkSession, settings: PipelineSettings, model, version: str, trained: NumericPath,
                  paths: list[NumericPath], dates: list[str]) -> dict[str, dict]:
    """The agreement of each of ``paths`` with ``trained`` (the bundle's path) on a sample of the
    held-out ``dates``'s text documents, by path label (``trained`` itself is skipped)."""
    others = [p for p in dict.fromkeys(paths) if p != trained]
    if not others:
        return {}
    started = time.monotonic()
    cfg = model.config
    text = [s for s in cfg.sources if s not in cfg.tabular_sources]
    tabular = tuple(cfg.tabular_sources)
    inputs = (sample_inputs(spark, settings, start_date=dates[0], end_date=dates[-1],
                            max_per_source=settings.gates.path_sample_docs)
              .where(F.col("source").isin(text)).persist())
    try:
        reference = _codes(spark, settings, model, inputs, tabular, trained)
        measured = {}
        for path in others:
            figures = agreement(reference, _codes(spark, settings, model, inputs, tabular, path))
            measured[path.label] = {**figures, "reference": trained.label, "heldout_dates": dates,
                                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            log.info("tokenizer %s: path %s keeps %.4f of %d documents' full code tuples vs %s (per level %s)",
                     version, path, figures["agreement"], figures["documents"], trained,
                     ", ".join(f"{v:.4f}" for v in figures["per_level"]))
    finally:
        inputs.unpersist()
    log.info("measured %d numeric path(s) of %s in %.0f s", len(others), version, time.monotonic() - started)
    return measured
