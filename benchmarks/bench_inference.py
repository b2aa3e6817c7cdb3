"""Inference throughput: the nightly ``stage`` step against the bare encoder loop, and what sits
between them; the lean quantizer; the optional int8 encoder.

    python -m benchmarks.bench_inference --out bench_results [--config conf/bench.yaml] [--quick]
        [--only main] [--only stage_sizes] [--only dedup]

Set-up (untimed): the bench world (``inference.world`` with size overrides) written to a temporary
lake, a tokenizer trained on it by the training job, the date's documents built by the
pipeline's own :func:`pipelines.night.documents.build_documents`.  Then, all on those documents, in one
run (work is counted per **CPU-second** of every process involved -- driver, Spark JVM, Python
workers -- since wall time on a shared machine is noisy):

* ``encoder``: ``TextEncoder.encode`` over all documents, one global length sort (the bare
  loop), with the pipeline's encoder settings, and with ``max_batch_tokens: null`` (32 rows);
* ``udf_body``: :func:`pipelines.night.inference.run_chunks` + ``TokenizerRuntime.tokenize`` in this
  process, chunks of the Arrow batch size, and of 256 rows (the old ``batch_rows``);
* ``spark_udf``: the tokenize UDF over a DataFrame of the documents (``noop`` sink): cold (fresh
  workers load the models), warm (right after), and cold again after ``idle_wait_s`` (Spark ends
  Python workers idle for 60 s);
* ``spark_udf_sizes`` (``udf_sizes``: multipliers of the documents): the warm UDF at several sizes,
  one worker and side by side, beside the bare encoder on the same documents, each fitted as
  fixed + per document (:mod:`benchmarks.bench_udf_sizes`);
* ``stage``: the whole ``stage`` step of the date (validation, quarantine, documents, UDF,
  Delta write, counts);
* ``quantize``: embeddings per CPU-second of the lean ``MRQVAE.quantize``, the full eval path
  (``quantize_reference``) and a naive residual quantizer with the same MLP (``torch.cdist``
  argmin per level), interleaved, on the ``quantize.preset`` model;
* ``int8`` and ``bf16_autocast``: the encoder's other numeric paths against fp32
  (:mod:`benchmarks.bench_numeric_paths`): int8 dynamic's speed, changed codes and probe AUC; the
  full-tuple agreement of bf16 autocast (the GPU executor's path, its CPU stand-in here);
* ``stage_sizes`` (when configured): the ``stage`` at several multiples of the world's users, with
  the bare encoder on each size's documents, and a fit of stage CPU-s = fixed + per document: how
  the fixed costs of a night (Spark jobs, model loads, Delta commits) amortise as users grow.
* ``dedup`` (when configured): the ``stage`` with ``inference.dedup_documents`` off and on,
  interleaved, at several repeat shares of the world (:mod:`benchmarks.bench_dedup`);
  ``--only dedup`` runs it alone.

Writes ``<out>/bench_inference.json``; ratios are against the bare encoder of the same run.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_dedup import bench_dedup
from benchmarks.bench_dedup import summary_lines as dedup_summary_lines
from benchmarks.bench_numeric_paths import bench_numeric_paths, numeric_path_lines
from benchmarks.bench_udf_sizes import bench_udf_sizes, udf_sizes_lines
from benchmarks.cpu_meter import TreeCpuMeter
from benchmarks.matmul_anchor import anchor
from benchmarks.common import (
    TrainedLake,
    bench_arguments,
    fixed_plus_per_doc,
    repo_path,
    run_benchmark,
    spark_session,
    time_interleaved,
)
from pipelines.lake.lake import Lake

log = logging.getLogger("benchmarks.inference")


def _rate(n: int, meter: TreeCpuMeter, unit: str = "docs") -> dict[str, float]:
    return {f"{unit}": n, "cpu_s": meter.cpu_s, "wall_s": meter.wall_s,
            f"{unit}_per_cpu_s": n / meter.cpu_s if meter.cpu_s else None,
            f"{unit}_per_wall_s": n / meter.wall_s if meter.wall_s else None}


# --------------------------------------------------------------------------- set-up
def _prepare(spark, params: dict[str, Any], tmp_root: Path, trained: TrainedLake | None = None):
    """The world, its lake's settings and the promoted tokenizer: written and trained here, or
    copied from ``trained``."""
    from benchmarks.common import pipeline_settings, train_promoted
    from pipelines.night.day_run import load_tokenizer_info
    from pipelines.world import load_world_config, write_world

    if trained is not None:
        settings = trained.copy_to(tmp_root, params.get("settings_overrides"))
        return trained.world, settings, load_tokenizer_info(settings)
    world = load_world_config(repo_path(params["world"]), params.get("world_overrides"))
    settings = pipeline_settings(tmp_root / "lake", tmp_root / "model", params.get("settings_overrides"))
    write_world(spark, world, settings.tables_root)
    train_promoted(spark, settings)
    return world, settings, load_tokenizer_info(settings)


def _documents(spark, settings, event_date: str):
    """The date's (user_id, event_date, source, document) rows as the pipeline builds them."""
    from pyspark.sql import functions as F

    from pipelines.night.documents import build_documents
    from pipelines.night.validation import check_raw_events

    sources = settings.sources_config()
    events = Lake(spark, settings).read("raw_events").where(F.col("event_date") == event_date)
    valid = check_raw_events(events, sources, settings.validation).valid
    frame = build_documents(valid, sources).cache()
    return frame, frame.toPandas()


# --------------------------------------------------------------------------- sections
def bench_encoder_and_udf(spark, settings, info, docs_frame, docs, params: dict[str, Any]) -> dict[str, Any]:
    """Bare encoder loop, UDF body in-process, Spark UDF cold / warm / cold-after-idle."""
    from pipelines.night.inference import TokenizerRuntime, inference_spec, make_tokenize_udf, run_chunks
    from u2qt_core.encoders.text import TextEncoder

    texts = docs["document"].tolist()
    n = len(texts)
    spec = inference_spec(settings, tabular_sources=info.tabular_sources, model_dir=info.model_dir,
                          tokenizer_version=info.version)
    out: dict[str, Any] = {"documents": n}
    bare = TextEncoder(settings.encoder)
    rows32 = TextEncoder(settings.encoder.model_copy(update={"max_batch_tokens": None}))
    runtime = TokenizerRuntime(spec)
    cols = (docs["source"].to_numpy(object), docs["document"].to_numpy(object), np.array([None] * n, dtype=object))
    users, dates = docs["user_id"].to_numpy(object), docs["event_date"].astype(str).to_numpy(object)
    arrow_rows = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch"))
    variants = {
        "encoder_bare": lambda: bare.encode(texts),
        "encoder_bare_32_rows": lambda: rows32.encode(texts),
        "udf_body_arrow_batch": lambda: run_chunks(type(spec)(**{**spec.__dict__, "batch_rows": arrow_rows}),
                                                   users, dates, cols, runtime.tokenize),
        "udf_body_256_rows": lambda: run_chunks(type(spec)(**{**spec.__dict__, "batch_rows": 256}),
                                                users, dates, cols, runtime.tokenize),
    }
    meters: dict[str, list[float]] = {k: [] for k in variants}

    def metered(name):
        def call():
            start = time.process_time()
            variants[name]()
            meters[name].append(time.process_time() - start)
        return call

    time_interleaved({k: metered(k) for k in variants}, repeats=int(params.get("repeats", 2)), warmup=0)
    import torch

    out["torch_threads"] = torch.get_num_threads()
    out["in_process"] = {k: {"cpu_s": v, "docs_per_cpu_s": n / min(v)} for k, v in meters.items()}
    plan = bare.plan_batches([len(s) for s in bare._tokenize(texts, None)[0]])
    real = sum(len(s) for s in bare._tokenize(texts, None)[0])
    out["padding"] = {"real_tokens": real, "processed_tokens": sum(len(r) * w for r, w in plan),
                      "forward_passes": len(plan)}
    # the physical-limit anchor: the bare encoder's FLOP rate against the machine's fp32 matmul rate
    out["matmul_anchor"] = anchor(bare, plan, min(meters["encoder_bare"]))

    frame = docs_frame.repartition(settings.inference.partitions, "user_id").cache()
    frame.count()
    tokenize = make_tokenize_udf(spec)
    query = frame.select(tokenize("user_id", "event_date", "source", "document", "features").alias("codes"))

    def spark_run() -> dict[str, float]:
        with TreeCpuMeter() as m:
            query.write.format("noop").mode("overwrite").save()
        return _rate(n, m)

    runs = {"cold": spark_run(), "warm": spark_run(), "warm_again": spark_run()}
    idle = float(params.get("idle_wait_s", 0))
    if idle:
        time.sleep(idle)
        runs[f"after_{int(idle)}s_idle"] = spark_run()
    out["spark_udf"] = runs
    frame.unpersist()
    if params.get("udf_sizes"):
        out["spark_udf_sizes"] = bench_udf_sizes(docs_frame, tokenize, texts, bare.encode,
                                                 [int(m) for m in params["udf_sizes"]], settings.inference.partitions)
    return out


def bench_stage(spark, settings, info, event_date: str, n_docs: int) -> dict[str, Any]:
    """The whole ``stage`` step of the date, process-tree CPU (workers warm from the UDF runs)."""
    from pipelines.night.day_run import DayRun, default_run_id
    from pipelines.night.stage import stage

    run = DayRun(spark, settings, event_date, default_run_id(event_date), info)
    with TreeCpuMeter() as m:
        result = stage(run)
    return {**_rate(n_docs, m), "result": result.__dict__}


def bench_stage_sizes(spark, params: dict[str, Any], tmp_root: Path) -> dict[str, Any]:
    """``stage`` at ``stage_sizes.user_multipliers`` x the world's users, one tokenizer: each size
    on a fresh lake, the bare encoder over that date's documents, then the stage. Stage CPU is
    fitted as ``fixed_cpu_s + docs / docs_per_cpu_s`` (least squares over the sizes), which says
    how far the fixed costs (Spark jobs, model loads, Delta commits) are amortised at a size."""
    from benchmarks.common import pipeline_settings, train_promoted
    from pipelines.night.day_run import load_tokenizer_info
    from pipelines.world import load_world_config, write_world
    from u2qt_core.encoders.text import TextEncoder

    overrides = dict(params.get("world_overrides") or {})
    base_users = int(overrides.get("n_users", 1000))
    model_dir = tmp_root / "sizes-model"
    runs: list[dict[str, Any]] = []
    info = None
    for multiplier in params["stage_sizes"]["user_multipliers"]:
        world = load_world_config(repo_path(params["world"]), {**overrides, "n_users": base_users * multiplier})
        settings = pipeline_settings(tmp_root / f"sizes-{multiplier}x", model_dir, params.get("settings_overrides"))
        write_world(spark, world, settings.tables_root)
        if info is None:  # the tokenizer of the smallest size serves every size
            train_promoted(spark, settings)
            info = load_tokenizer_info(settings)
        event_date = world.history_dates()[-1].isoformat()
        frame, docs = _documents(spark, settings, event_date)
        frame.unpersist()
        texts = docs["document"].tolist()
        started = time.process_time()
        TextEncoder(settings.encoder).encode(texts)
        bare_cpu = time.process_time() - started
        stage = bench_stage(spark, settings, info, event_date, len(texts))
        runs.append({"user_multiplier": multiplier, "users": world.n_users, "documents": len(texts),
                     "encoder_bare_docs_per_cpu_s": len(texts) / bare_cpu, "stage": stage,
                     "stage_over_bare": stage["docs_per_cpu_s"] * bare_cpu / len(texts)})
        log.info("inference: stage at %dx users: %d docs, %.2fx the bare encoder", multiplier, len(texts),
                 runs[-1]["stage_over_bare"])
    fit = fixed_plus_per_doc([r["documents"] for r in runs], [r["stage"]["cpu_s"] for r in runs])
    slope = fit["cpu_s_per_doc"]
    return {"runs": runs, "fit": {**fit, "marginal_docs_per_cpu_s": 1 / slope if slope > 0 else None}}


def naive_quantize(model, x, source: str):
    """A plain residual quantizer over the same MLP: ``cdist`` argmin per level (the reference
    for "what a straightforward implementation costs")."""
    import torch

    with torch.no_grad():
        r = model._encode(x, source)
        codes = []
        for codebook in model.route(source):
            allowed = codebook.allowed_codes(source)
            table = codebook.embedding[allowed]
            c = allowed[torch.cdist(r, table).argmin(dim=1)]
            codes.append(c)
            r = r - codebook.embedding[c]
        return torch.stack(codes, dim=1)


def bench_quantize(params: dict[str, Any]) -> dict[str, Any]:
    """Lean vs full vs naive quantize, embeddings per CPU-second, interleaved, one thread."""
    import torch

    from benchmarks.bench_model import clustered_unit_vectors, init_codebooks_from_data
    from pipelines.config.settings import load_sources
    from u2qt_core.config import load_model_preset
    from u2qt_core.mrqvae import MRQVAE

    layout = load_sources().layout(int(params.get("encoder_dim", 384)))   # the text encoder's width
    cfg = load_model_preset(repo_path(params["preset"]), layout=layout).mrqvae
    source, rows = params.get("source") or cfg.text_sources[0], int(params["rows"])
    torch.manual_seed(0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = MRQVAE(cfg)
        data = torch.from_numpy(clustered_unit_vectors(max(rows, cfg.kmeans_buffer_multiple * cfg.num_codes),
                                                       cfg.input_dims[source]))
        init_codebooks_from_data(model, source, data)
        x = data[:rows].contiguous()
        lean, ref, naive = model.quantize(x, source), model.quantize_reference(x, source), naive_quantize(model, x, source)
        cpu: dict[str, list[float]] = {"lean": [], "reference": [], "naive": []}
        fns = {"lean": model.quantize, "reference": model.quantize_reference,
               "naive": lambda a, s: naive_quantize(model, a, s)}

        def metered(name):
            def call():
                start = time.process_time()
                fns[name](x, source)
                cpu[name].append(time.process_time() - start)
            return call

        time_interleaved({k: metered(k) for k in fns}, repeats=int(params.get("repeats", 5)), warmup=1)
    finally:
        torch.set_num_threads(previous)
    rate = {k: rows / float(np.median(v)) for k, v in cpu.items()}
    return {
        "preset": params["preset"], "source": source, "rows": rows, "cpu_s": cpu,
        "embeddings_per_cpu_s": rate,
        "lean_over_reference": rate["lean"] / rate["reference"], "lean_over_naive": rate["lean"] / rate["naive"],
        "lean_equals_reference": bool(torch.equal(lean, ref)),
        "naive_rows_equal_reference": float((naive == ref).all(dim=1).float().mean()),
    }


# --------------------------------------------------------------------------- driver
SECTIONS = ("main", "stage_sizes", "dedup")


def bench_inference(params: dict[str, Any], tmp_root: Path | None = None,
                    only: list[str] | None = None, trained: TrainedLake | None = None) -> dict[str, Any]:
    """``main`` (every side-by-side ratio on one date's documents), ``stage_sizes`` and ``dedup``;
    ``main`` on a copy of ``trained`` when given (no world written, no training)."""
    own_tmp = tmp_root is None
    tmp_root = Path(tempfile.mkdtemp(prefix="u2qt-bench-inference-")) if own_tmp else Path(tmp_root)
    sections = only or [name for name in SECTIONS if name == "main" or params.get(name)]
    try:
        spark = spark_session(tmp_root)
        if "main" not in sections:
            out = {"parameters": params}
            if "stage_sizes" in sections:
                out["stage_sizes"] = bench_stage_sizes(spark, params, tmp_root)
            if "dedup" in sections:
                out["dedup"] = bench_dedup(spark, params, tmp_root)
            return out
        world, settings, info = _prepare(spark, params, tmp_root, trained)
        event_date = world.history_dates()[-1].isoformat()
        docs_frame, docs = _documents(spark, settings, event_date)
        log.info("inference: %d documents of %s", len(docs), event_date)
        out: dict[str, Any] = {"event_date": event_date, "parameters": params,
                               "encoder_settings": settings.encoder.model_dump(),
                               "arrow_max_records_per_batch": spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")}
        out.update(bench_encoder_and_udf(spark, settings, info, docs_frame, docs, params))
        text_docs = len(docs)
        out["stage"] = bench_stage(spark, settings, info, event_date, text_docs)
        out["quantize"] = bench_quantize(params["quantize"])
        if params.get("int8", True):
            out.update(bench_numeric_paths(spark, settings, info, docs, params))
        bare = out["in_process"]["encoder_bare"]["docs_per_cpu_s"]
        out["ratios_vs_bare_encoder"] = {
            "stage": out["stage"]["docs_per_cpu_s"] / bare,
            "udf_body_arrow_batch": out["in_process"]["udf_body_arrow_batch"]["docs_per_cpu_s"] / bare,
            "udf_body_256_rows": out["in_process"]["udf_body_256_rows"]["docs_per_cpu_s"] / bare,
            "encoder_bare_32_rows": out["in_process"]["encoder_bare_32_rows"]["docs_per_cpu_s"] / bare,
            **{f"spark_udf_{k}": v["docs_per_cpu_s"] / bare for k, v in out["spark_udf"].items()},
            **{f"spark_udf_marginal_{k}": out["spark_udf_sizes"][k]["marginal_over_bare"]
               for k in ("one_worker", "side_by_side") if "spark_udf_sizes" in out},
        }
        if "stage_sizes" in sections:
            out["stage_sizes"] = bench_stage_sizes(spark, params, tmp_root)
        if "dedup" in sections:
            out["dedup"] = bench_dedup(spark, params, tmp_root)
        return out
    finally:
        if own_tmp:
            shutil.rmtree(tmp_root, ignore_errors=True)


def summary_lines(payload: dict) -> list[str]:
    r = payload["results"]
    lines = [f"bench_inference: {r.get('documents')} documents, wall {payload.get('wall_seconds', 0):.0f}s, "
             f"load {payload.get('load_average_before')} -> {payload.get('load_average_after')}"]
    if "stage_sizes" in r:
        fit = r["stage_sizes"]["fit"]
        lines += [f"  stage at {x['documents']} docs: {x['stage_over_bare']:.2f}x the bare encoder"
                  for x in r["stage_sizes"]["runs"]]
        lines.append(f"  stage CPU fit: {fit['fixed_cpu_s']:.1f} CPU-s fixed + {fit['cpu_s_per_doc'] * 1000:.1f} ms per doc")
    if "dedup" in r:
        lines += dedup_summary_lines(r["dedup"])
    if "matmul_anchor" in r:
        a = r["matmul_anchor"]
        lines.append(f"  encoder: {a['encoder_gflop_per_cpu_s']:.1f} GFLOP/CPU-s = {a['fraction_of_matmul_peak']:.2f} of this "
                     f"machine's fp32 matmul rate ({a['matmul']['gflop_per_cpu_s']:.1f} GFLOP/CPU-s, same run)")
    if "ratios_vs_bare_encoder" not in r:
        return lines
    lines += [f"  {k}: {v:.2f}x the bare encoder (docs/CPU-s)" for k, v in r["ratios_vs_bare_encoder"].items() if v is not None]
    if "spark_udf_sizes" in r:
        lines += udf_sizes_lines(r["spark_udf_sizes"])
    q = r["quantize"]
    lines.append(f"  quantize: lean {q['lean_over_reference']:.2f}x full path, {q['lean_over_naive']:.2f}x naive; "
                 f"codes equal: {q['lean_equals_reference']}")
    return lines + numeric_path_lines(r)


def run(config: dict[str, Any], out_dir: str | Path, tmp_root: Path | None = None,
        only: list[str] | None = None, trained: TrainedLake | None = None) -> dict:
    """Run ``config['inference']`` and write ``<out_dir>/bench_inference.json``."""
    return run_benchmark("bench_inference", lambda: bench_inference(config["inference"], tmp_root, only, trained),
                         out_dir, summary_lines)


def main(argv: list[str] | None = None) -> int:
    args, config = bench_arguments((__doc__ or "").split("\n")[0], argv, lambda parser: parser.add_argument(
        "--only", action="append", choices=list(SECTIONS), help="run only these sections (repeatable)"))
    run(config, args.out, only=args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
