"""Codebook quality benchmark (the ``quality`` section of ``make bench-model``): the demo world
written to a temporary lake, the training sample drawn and embedded by the training job's own
Spark functions (``train_job.sample_inputs`` / ``embed_inputs``: same documents, same sampling),
then ``train_mrqvae`` for each configured preset on that one sample; utilization per codebook
and collision rate per source from :func:`u2qt_core.metrics.codebook_metrics`.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Stopwatch, pipeline_settings, repo_path, spark_session

log = logging.getLogger("benchmarks.model")


def bench_quality(params: dict[str, Any], tmp_root: Path | None = None) -> dict[str, Any]:
    """Train each preset on the demo world's training sample; codebook utilization and collisions."""
    import torch

    from pipelines.tokenizer.sample import sample_inputs
    from pipelines.tokenizer.train_job import embed_inputs, preset_for
    from pipelines.world import load_world_config, write_world
    from u2qt_core.training import train_mrqvae

    own_tmp = tmp_root is None
    tmp_root = Path(tempfile.mkdtemp(prefix="u2qt-bench-quality-")) if own_tmp else Path(tmp_root)
    try:
        spark = spark_session(tmp_root)
        world = load_world_config(repo_path(params["world"]), params.get("world_overrides"))
        settings = pipeline_settings(tmp_root / "lake", tmp_root / "model", params.get("settings_overrides"))
        with Stopwatch() as world_sw:
            summary = write_world(spark, world, settings.tables_root)
        log.info("quality: world %s written in %.1fs: %s", params["world"], world_sw.seconds, summary.rows)
        sources = settings.sources_config()
        with Stopwatch() as embed_sw:
            inputs = sample_inputs(spark, settings, seed=0)
            embeddings = embed_inputs(spark, settings, inputs, (sources.tabular.name,))
        rows = {s: int(len(x)) for s, x in embeddings.items()}
        text_rows = sum(n for s, n in rows.items() if s != sources.tabular.name)
        log.info("quality: training sample %s embedded in %.1fs (%.1f documents/s through the Spark UDF)",
                 rows, embed_sw.seconds, text_rows / embed_sw.seconds)
        encoder_dim = int(next(x.shape[1] for s, x in embeddings.items() if s != sources.tabular.name))

        default_threads = torch.get_num_threads()
        torch.set_num_threads(int(params.get("torch_threads", 1)))
        presets = {}
        try:
            for name, spec in params["presets"].items():
                if not spec:  # a preset switched off (e.g. by the quick: section)
                    continue
                preset_settings = settings.model_copy(
                    update={"training": settings.training.model_copy(update={"preset": str(repo_path(spec["path"]))})})
                overrides = {"train": {"checkpoint_every": 0}}
                if spec.get("steps") is not None:
                    overrides["train"]["steps"] = int(spec["steps"])
                preset = preset_for(preset_settings, encoder_dim, overrides)
                with Stopwatch() as train_sw:
                    result = train_mrqvae(embeddings, preset, progress=False)
                presets[name] = _quality_entry(spec, preset, result, train_sw.seconds)
                log.info("quality: %s trained %d steps in %.1fs; utilization %s; collision %s", name,
                         result.steps, train_sw.seconds,
                         {k: round(v, 3) for k, v in presets[name]["utilization_per_codebook"].items()},
                         {k: round(v, 4) for k, v in presets[name]["collision_rate_per_source"].items()})
        finally:
            torch.set_num_threads(default_threads)
        return {
            "parameters": {"world": str(params["world"]), "world_overrides": params.get("world_overrides") or {},
                           "n_users": world.n_users, "n_days": world.n_days,
                           "max_docs_per_source": settings.training.max_docs_per_source,
                           "torch_threads": int(params.get("torch_threads", 1)),
                           "method": "Spark: write_world + train_job.sample_inputs/embed_inputs once, "
                                     "then u2qt_core.training.train_mrqvae per preset (in process)"},
            "world_rows": summary.rows,
            "world_write_seconds": world_sw.seconds,
            "training_rows": rows,
            "embed_seconds": embed_sw.seconds,
            "embed_documents_per_s": text_rows / embed_sw.seconds if embed_sw.seconds else None,
            "presets": presets,
        }
    finally:
        if own_tmp:
            shutil.rmtree(tmp_root, ignore_errors=True)


def _quality_entry(spec: dict, preset, result, seconds: float) -> dict[str, Any]:
    m = result.metrics
    last = result.history[-1] if result.history else {}
    return {
        "path": str(spec["path"]),
        "num_codes": preset.mrqvae.num_codes,
        "code_dim": preset.mrqvae.code_dim,
        "levels": {"shared": preset.mrqvae.shared_levels, "specific": preset.mrqvae.specific_levels},
        "steps": result.steps,
        "preset_steps": spec.get("steps") is None,
        "batch_size": preset.train.batch_size,
        "train_seconds": seconds,
        "final_loss": last.get("loss"),
        "final_recon_loss": last.get("recon_loss"),
        "utilization_per_codebook": {name: cb["utilization"] for name, cb in m["per_codebook"].items()},
        "used_per_codebook": {name: cb["used"] for name, cb in m["per_codebook"].items()},
        "utilization_per_level": {str(lvl["level"]): lvl["utilization"] for lvl in m["per_level"]},
        "perplexity_per_level": {str(lvl["level"]): lvl["perplexity"] for lvl in m["per_level"]},
        "collision_rate_per_source": {s: v["collision_rate"] for s, v in m["per_source"].items()},
        "recon_cosine_per_source": {s: v.get("recon_cosine") for s, v in m["per_source"].items()},
        "rows_per_source": {s: v["rows"] for s, v in m["per_source"].items()},
        "residual_norm": m.get("residual_norm"),
    }
