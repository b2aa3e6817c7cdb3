"""``u2qt paper-eval``: the benchmark world end to end (FOUNDv2 sections 5-6, appendix C).

1. write the evaluation world to Delta under ``settings.tables_root`` (skipped when the same
   world is already there);
2. build every (user, source, day) input of the history window with the training job's helpers
   and embed ALL of them once through the Spark encoder UDF; the embeddings (with their keys and
   documents) are cached in ``out_dir/cache`` under a key of the world, the sources and the
   encoder, so a re-run with the same world skips encoding;
3. train the main tokenizer (default 2 shared + 2 specific levels) on all embeddings and
   tokenize every user-day;
4. evaluate (:mod:`u2qt_core.evaluation`): linear probes of four user representations, the
   alignment pretext-task ablation, MaskNet CTR with and without user tokens, codebook-design
   and source ablations, storage of tokens vs float embeddings written with Spark/Delta;
5. write ``out_dir/report.md`` with figures and ``out_dir/results.json``.

This module only orchestrates: Spark reads and the embedding cache are in
:mod:`pipelines.evaluation.eval_inputs`, every measurement in :mod:`u2qt_core.evaluation`.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipelines.lake import tables
from pipelines.evaluation.eval_inputs import (
    EmbeddedInputs,
    cache_key,
    description_embeddings,
    embed_all_inputs,
    ensure_world,
    read_labels,
    read_rec_inputs,
)
from pipelines.config.settings import PipelineSettings
from pipelines.tokenizer.train_job import preset_for
from u2qt_core.config import ModelPreset
from u2qt_core.errors import ConfigError
from u2qt_core.evaluation.config import EvalConfig

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tokenizer presets
def _preset(settings: PipelineSettings, cfg: EvalConfig, encoder_dim: int, *, steps: int, mrqvae: dict | None = None,
            drop_source: str | None = None) -> ModelPreset:
    """The evaluation's model preset via :func:`pipelines.tokenizer.train_job.preset_for` (sources and input
    widths from this pipeline), from ``cfg.tokenizer.preset`` + overrides, optionally without one source."""
    sources = settings.sources_config()
    overrides = {
        "mrqvae": {**cfg.tokenizer.overrides.get("mrqvae", {}), **(mrqvae or {})},
        "train": {**cfg.tokenizer.overrides.get("train", {}), "steps": steps, "seed": cfg.seed,
                  "checkpoint_every": 0, "log_every": max(steps // 4, 1)},
    }
    if drop_source:
        names = [s for s in sources.all_sources if s != drop_source]
        overrides["mrqvae"].update(      # deep-merged over the layout: None deletes the dropped width
            sources=names, input_dims={drop_source: None},
            tabular_sources=[n for n in [sources.tabular.name] if n in names])
    eval_settings = settings.model_copy(
        update={"training": settings.training.model_copy(update={"preset": cfg.tokenizer.preset})})
    return preset_for(eval_settings, encoder_dim, overrides)


# --------------------------------------------------------------------------- storage
def measure_storage(spark: SparkSession, folder: Path, *, user_ids: dict[str, np.ndarray], days: dict[str, np.ndarray],
                    codes: dict[str, np.ndarray], vectors: dict[str, np.ndarray] | None, start_date: date) -> dict:
    """Write the token table ``(user_id, event_date, source, codes array<smallint>)`` and the
    float embeddings table ``(user_id, event_date, source, embedding array<float>)`` as Delta
    tables partitioned by ``event_date`` (the ``user_day_tokens`` layout) and measure them.
    Without ``vectors`` only the token table is written: ``{"tokens": sizes}``."""
    from u2qt_core.evaluation.storage import storage_comparison, table_size

    folder = Path(folder).absolute()
    if folder.exists():
        shutil.rmtree(folder)
    keys = []
    for source in sorted(codes):
        keys.append(pd.DataFrame({"user_id": user_ids[source], "day": days[source], "source": source}))
    frame = pd.concat(keys, ignore_index=True)
    frame["event_date"] = [start_date + timedelta(days=int(d)) for d in frame["day"]]
    frame = frame[["user_id", "event_date", "source"]]
    token_schema = T.StructType([tables.USER_DAY_TOKENS.schema[name] for name in ("user_id", "event_date", "source", "codes")])
    embed_schema = T.StructType([*token_schema.fields[:3], T.StructField("embedding", T.ArrayType(T.FloatType()), False)])
    token_frame = frame.assign(codes=[row.astype(np.int16) for s in sorted(codes) for row in codes[s]])
    tables_to_write = [("tokens", token_frame, token_schema)]
    if vectors is not None:
        embed_frame = frame.assign(embedding=[row.astype(np.float32) for s in sorted(vectors) for row in vectors[s]])
        tables_to_write.append(("embeddings", embed_frame, embed_schema))
    user_days = int(frame[["user_id", "event_date"]].drop_duplicates().shape[0])
    sizes = {}
    for name, pdf, schema in tables_to_write:
        path = str(folder / name)
        (spark.createDataFrame(pdf, schema=schema).write.format("delta").mode("overwrite")
         .partitionBy("event_date").save(path))
        rows = spark.read.format("delta").load(path).count()
        sizes[name] = table_size(path, user_days=user_days, rows=rows)
    if vectors is None:
        return {"tokens": sizes["tokens"].as_dict()}
    result = storage_comparison(sizes["tokens"], sizes["embeddings"])
    result["layout"] = ("Both tables: one row per (user, source, day), columns user_id bigint, event_date date, "
                        "source string + `codes array<smallint>` or `embedding array<float>`, Delta (Parquet, "
                        "Spark's default snappy compression), partitioned by event_date like `user_day_tokens`. "
                        "Bytes per user-day = bytes / distinct (user_id, event_date).")
    return result


# --------------------------------------------------------------------------- the command
def _labelled_rows(emb: EmbeddedInputs, user_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Drop the input rows of unlabelled users (in place); row -> user position, per source."""
    pos = pd.Series(np.arange(len(user_ids)), index=user_ids)
    for s in list(emb.x):
        keep = pos.reindex(emb.users[s]).notna().to_numpy()
        if not keep.all():
            log.warning("source %s: %d rows of unlabelled users left out", s, int((~keep).sum()))
            emb.x[s], emb.users[s], emb.days[s] = emb.x[s][keep], emb.users[s][keep], emb.days[s][keep]
    return {s: pos.reindex(emb.users[s]).to_numpy(np.int64) for s in emb.x}


def _representations(cfg: EvalConfig, main, emb: EmbeddedInputs, *, rows_user: dict[str, np.ndarray],
                     user_ids: np.ndarray, sources: list[str], tabular: str, code_dim: int, probe) -> dict[str, dict]:
    """Linear probes of the token representations and of the continuous / raw-text baselines."""
    from scipy import sparse

    from u2qt_core.evaluation.representations import mean_embeddings, tfidf_features, user_documents
    from u2qt_core.evaluation.tokenizers import pca_per_source, token_features

    n_users, p = len(user_ids), cfg.probe
    reps: dict[str, dict] = {}
    reps["tokens_bag"] = {"label": "U2QT tokens: bag of codes",
                          **probe(token_features(main, rows_user, n_users, sources, "bag", p.bag_transform))}
    token_vectors = token_features(main, rows_user, n_users, sources, "vectors")
    reps["tokens_vectors"] = {"label": "U2QT tokens: mean quantized (codebook) vector per source",
                              **probe(token_vectors)}
    continuous = mean_embeddings(rows_user, emb.x, n_users=n_users, sources=sources,
                                 dims={s: emb.x[s].shape[1] for s in sources})
    reps["continuous"] = {"label": "Continuous encoder embeddings, mean per source (FOUND-style)", **probe(continuous)}
    reps["continuous_pca"] = {
        "label": f"Continuous embeddings, PCA to {code_dim} dims per source, mean per source (control)",
        **probe(mean_embeddings(rows_user, pca_per_source(emb.x, code_dim, cfg.seed), n_users=n_users,
                                sources=sources, dims={s: min(code_dim, emb.x[s].shape[1]) for s in sources}))}
    tf = p.tfidf
    tfidf = tfidf_features(user_documents(emb.documents, user_ids), max_features=tf.max_features, min_df=tf.min_df,
                           ngram_max=tf.ngram_max, sublinear_tf=tf.sublinear_tf)
    reps["tfidf"] = {"label": "Raw features: TF-IDF of the user's raw text", **probe(tfidf)}
    profile_block = mean_embeddings(rows_user, {tabular: emb.x[tabular]}, n_users=n_users, sources=[tabular],
                                    dims={tabular: emb.x[tabular].shape[1]})
    reps["tfidf_profile"] = {"label": "Raw features: TF-IDF + tabular profile features",
                             **probe(sparse.hstack([tfidf, sparse.csr_matrix(profile_block)]).tocsr())}
    reps["tabular"] = {"label": "Raw features: tabular profile features alone", **probe(profile_block)}
    reps["tabular_tokens"] = {"label": "Raw tabular profile features + U2QT token vectors (every source)",
                              **probe(np.hstack([profile_block, token_vectors]))}
    # issue 25 item 4: does the tabular source's token keep what its raw features carry? (no text source)
    tabular_token = token_features(main, rows_user, n_users, [tabular], "vectors")
    reps["tabular_token"] = {"label": "U2QT token of the tabular source alone (its mean codebook vector)",
                             **probe(tabular_token)}
    reps["tabular_raw_token"] = {"label": "Raw tabular profile features + the tabular source's token vector",
                                 **probe(np.hstack([profile_block, tabular_token]))}
    return reps


def run_eval(spark: SparkSession, settings: PipelineSettings, *, world_config: Path, eval_config: Path,
             out_dir: Path, eval_overrides: dict[str, Any] | None = None) -> Path:
    """Benchmark world -> embeddings -> tokenizers -> probes, MaskNet, ablations, storage ->
    ``out_dir/report.md`` (returned) and ``out_dir/results.json``. ``eval_overrides`` are
    deep-merged over the evaluation YAML (e.g. ``{"masknet": {"enabled": False}}``)."""
    import torch
    from threadpoolctl import threadpool_limits

    from pipelines.world import load_world_config
    from u2qt_core.encoders.text import get_text_encoder
    from u2qt_core.evaluation import summary as text
    from u2qt_core.evaluation.ablations import codebook_ablation, matching_design, source_ablation
    from u2qt_core.evaluation.alignment_ablation import alignment_ablation
    from u2qt_core.evaluation.config import load_eval_config
    from u2qt_core.evaluation.probes import probe_tasks, split_users
    from u2qt_core.evaluation.recommendation import evaluate_ctr
    from u2qt_core.evaluation.report import plot_tsne, plot_utilization, render_report
    from u2qt_core.evaluation.tokenizers import train_tokenizer, tsne_panels

    started = time.monotonic()
    cfg = load_eval_config(eval_config, eval_overrides)
    if not cfg.tasks:
        raise ConfigError(f"{eval_config}: tasks: name the user_labels tasks to probe, e.g. [takeout, games]")
    world_cfg = load_world_config(Path(world_config))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = out_dir / "cache"

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)
    blas_limits = threadpool_limits(cfg.torch_threads)  # BLAS threads busy-wait on a shared CPU too
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.monotonic() - since, 1)
        return time.monotonic()

    try:
        t = time.monotonic()
        ensure_world(spark, settings, world_cfg, rewrite=cfg.rewrite_world)
        t = lap("world", t)
        sources_cfg = settings.sources_config()
        sources, tab = sources_cfg.all_sources, sources_cfg.tabular.name
        encoder = get_text_encoder(settings.encoder)
        key = cache_key(settings, world_cfg)
        cached = (cache_dir / f"inputs-{key}.npz").exists()
        emb = embed_all_inputs(spark, settings, world_cfg, cache_dir, (tab,))
        t = lap("embed (cache hit)" if cached else "embed", t)

        labels = read_labels(spark, settings, cfg.tasks)
        user_ids = labels.index.to_numpy(np.int64)
        n_users = len(user_ids)
        rows_user = _labelled_rows(emb, user_ids)
        y = {task: labels[task].to_numpy() for task in cfg.tasks}
        splits = {task: split_users(y[task], cfg.probe.test_size, cfg.seed) for task in cfg.tasks}
        p = cfg.probe

        def probe(features, c_by_task=None):
            return probe_tasks(features, y, splits, c_grid=p.c_grid, cv_folds=p.cv_folds, max_iter=p.max_iter,
                               seed=cfg.seed, c_by_task=c_by_task, bootstrap=p.bootstrap)

        # ---- main tokenizer
        make_preset = partial(_preset, settings, cfg, encoder.dim)
        main_preset = make_preset(steps=cfg.tokenizer.steps)
        main = train_tokenizer("main", emb.x, main_preset)
        t = lap("main tokenizer", t)
        mc = main_preset.mrqvae
        tokenizer_desc = (f"{mc.variant} {mc.shared_levels} shared + {mc.specific_levels} specific levels, "
                          f"{mc.num_codes} codes x {mc.code_dim} dims, {cfg.tokenizer.steps} steps")

        # ---- representations
        reps = _representations(cfg, main, emb, rows_user=rows_user, user_ids=user_ids, sources=sources, tabular=tab,
                                code_dim=mc.code_dim, probe=probe)
        t = lap("probes", t)

        # ---- alignment (table 5)
        alignment = {}
        if cfg.alignment.enabled:
            cutoff = world_cfg.n_days - cfg.alignment.description_days - 1
            text_emb = description_embeddings(
                spark, settings, world_cfg, cutoff + 1, user_ids, encoder,
                cache_dir / f"descriptions-{key}-{cfg.alignment.description_days}.npy")
            alignment = alignment_ablation(main, cfg.alignment, rows_user=rows_user, days=emb.days, n_users=n_users,
                                           sources=sources, cutoff_day=cutoff, text_embeddings=text_emb,
                                           seed=cfg.seed, probe=probe)
            best = "S+T+W" if "S+T+W" in alignment else cfg.alignment.task_sets[-1]
            reps["tokens_fused"] = {"label": f"U2QT tokens: alignment model fused embedding ({best})",
                                    **{k: alignment[best][k] for k in ("tasks", "avg_auc", "avg_auc_ci", "avg_auc_draws", "avg_ks", "dim")
                                       if k in alignment[best]}}
            t = lap("alignment", t)

        # ---- recommendation (appendix C)
        rec = {}
        if cfg.masknet.enabled:
            rec_frame, profiles = read_rec_inputs(spark, settings)
            rec = evaluate_ctr(rec_frame, profiles, main, cfg.masknet, rows_user=rows_user, user_ids=user_ids,
                               sources=sources, max_bag=world_cfg.n_days, seed=cfg.seed)
            t = lap("masknet", t)

        # ---- storage (table 6)
        storage = {}
        if cfg.storage:
            storage = measure_storage(spark, out_dir / "storage", user_ids=emb.users, days=emb.days, codes=main.codes,
                                      vectors={s: emb.x[s] for s in main.codes}, start_date=world_cfg.start_date)
            t = lap("storage", t)

        # ---- U²QT-AAAI beside FOUNDv2: same inputs, probes, bootstrap resamples and storage layout
        variant = {}
        if cfg.u2qt.enabled:
            from pipelines.evaluation.u2qt_variant import run_u2qt_variant

            store = partial(measure_storage, spark, user_ids=emb.users, days=emb.days, start_date=world_cfg.start_date)
            main_sizes = storage or store(out_dir / "storage", codes=main.codes, vectors={s: emb.x[s] for s in main.codes})

            def sizes(codes: dict[str, np.ndarray]) -> dict:
                return {"foundv2": main_sizes["tokens"], "continuous": main_sizes["embeddings"],
                        "u2qt": store(out_dir / "storage_u2qt", codes=codes, vectors=None)["tokens"]}

            added, variant = run_u2qt_variant(
                spark, settings, cfg, world_cfg, emb, main=main, main_batch=main_preset.train.batch_size,
                cache_dir=cache_dir, encoder_dim=encoder.dim, tabular=tab, sources=sources, rows_user=rows_user,
                n_users=n_users, probe=probe, storage=sizes)
            reps.update(added)
            variant["differences"] = text.variant_differences(reps)
            variant["notes"] = text.variant_notes(variant, cfg)
            t = lap("u2qt-aaai", t)

        # ---- ablations (tables 3, 4)
        ref = reps["tokens_vectors" if cfg.ablations.representation == "vectors" else "tokens_bag"]
        fixed_c = {task: r["c"] for task, r in ref["tasks"].items()}
        ablation_probe = partial(probe, c_by_task=fixed_c)
        designs, trained = codebook_ablation(cfg, make_preset, emb.x, rows_user=rows_user, n_users=n_users,
                                             sources=sources, probe=ablation_probe)
        t = lap("codebook ablation", t)
        all_row = matching_design(designs, variant="multiview", levels=mc.num_levels, num_codes=mc.num_codes,
                                  code_dim=mc.code_dim)
        source_rows = []
        if cfg.ablations.drop_sources:
            source_rows = source_ablation(cfg, make_preset, emb.x, rows_user=rows_user, n_users=n_users,
                                          sources=sources, probe=ablation_probe, all_sources_row=all_row)
            t = lap("source ablation", t)

        # ---- figures
        figures = {}
        fig = plot_utilization(main.metrics["per_codebook"], out_dir / "utilization_main.png",
                               title=f"Codebook utilization, main tokenizer\n({tokenizer_desc})")
        figures["Codebook utilization per level and codebook (FOUNDv2 figure 5)"] = fig.name
        shared_only = next((n for n, tk in trained.items() if tk.model.config.variant == "shared_only"), None)
        multiview = all_row["name"] if all_row else None
        silhouettes = {}
        if shared_only and multiview:
            panels, silhouettes = tsne_panels({shared_only: trained[shared_only], multiview: trained[multiview]}, emb.x,
                                              per_source=cfg.report.tsne_points_per_source,
                                              perplexity=cfg.report.tsne_perplexity, seed=cfg.seed)
            fig = plot_tsne(panels, out_dir / "tsne_sources.png", scores=silhouettes)
            figures["t-SNE of per-source quantized embeddings, shared-only vs shared+specific (FOUNDv2 figure 4)"] = fig.name
        t = lap("figures", t)

        # ---- results + report
        results = {
            "meta": {"world_config": str(world_config), "eval_config": str(eval_config), "users": n_users,
                     "days": world_cfg.n_days, "inputs": emb.rows, "inputs_total": int(sum(emb.rows.values())),
                     "encoder": (f"{Path(str(encoder.model_path)).name} ({settings.encoder.pooling} pooling, "
                                 f"{encoder.dim} dims)"),
                     "tokenizer": tokenizer_desc, "embed_seconds": emb.embed_seconds, "embed_cached": cached,
                     "label_rates": {task: float(np.mean(v)) for task, v in y.items()},
                     "wall_seconds": time.monotonic() - started},
            "tasks": list(cfg.tasks),
            "probe_protocol": text.probe_protocol(n_users, p, cfg.seed),
            "representations": reps,
            "summary": text.target_summary(reps, cfg.tasks),
            "alignment": alignment,
            "alignment_note": text.alignment_note(cfg, world_cfg.n_days) if alignment else "",
            "u2qt": variant,
            "recommendation": rec,
            "storage": storage,
            "ablation_codebooks": designs,
            "ablation_note": text.ablation_note(cfg, fixed_c),
            "ablation_sources": source_rows,
            "main_tokenizer_metrics": main.metrics,
            "tsne_silhouette_by_source": silhouettes,
            "codebook_metrics_summary": text.codebook_summary(main.metrics["per_codebook"], silhouettes),
            "timings": timings,
        }
        text_dims = sum(emb.x[s].shape[1] for s in sources_cfg.text_sources if s in emb.x)
        results["notes"] = text.notes(results, cfg, label_window_days=world_cfg.label_window_days,
                                      text_dims=text_dims, tabular_dims=emb.x[tab].shape[1])
        results["meta"]["wall_seconds"] = time.monotonic() - started
        timings["total"] = round(results["meta"]["wall_seconds"], 1)
        (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
        report = out_dir / "report.md"
        report.write_text(render_report(results, figures))
        log.info("evaluation finished in %.0f s: %s", results["meta"]["wall_seconds"], report)
        return report
    finally:
        torch.set_num_threads(previous_threads)
        blas_limits.restore_original_limits()


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
