"""The real nightly Spark job on a world bigger than the demo.

    python -m benchmarks.bench_pipeline --out bench_results [--config conf/bench.yaml] [--quick]

Steps, all on a temporary lake with the repo's ``conf/pipeline.yaml`` (local Spark profile):

1. ``write_world`` of ``conf/world/bench.yaml`` with size overrides (default 2,000 users x 2 days);
2. ``train_job.train`` (sample, embed in Spark, train the MRQ-VAE on the driver, save);
3. every world date through the night's own ``stage`` / ``check_quality`` / ``publish``, timed
   per step; inside ``publish`` the fact-table write (which the history view follows) and the
   identity update are the seconds publish reports itself (``user_day_tokens_seconds``,
   ``user_tokens_seconds`` of its metrics; absent on a date it found already published);
4. a re-run of the last date (``rerun: publish`` re-publishes it: nothing changed, nothing is
   written; ``rerun: day`` runs all three steps again);
5. Delta table sizes: live bytes (``DESCRIBE DETAIL``), bytes on disk, rows, bytes per row.

History length, total users and backfills at scale: ``benchmarks/bench_scale.py``.

Writes ``<out>/bench_pipeline.json``.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Stopwatch,
    TrainedLake,
    simple_main,
    repo_path,
    run_benchmark,
    spark_session,
)
from pipelines.lake.lake import Lake

log = logging.getLogger("benchmarks.pipeline")

MERGE_METRICS = (
    "numSourceRows", "numTargetRowsInserted", "numTargetRowsUpdated", "numTargetRowsMatchedUpdated",
    "numTargetRowsCopied", "numTargetRowsDeleted", "numOutputRows", "numTargetFilesAdded",
    "numTargetFilesRemoved", "numTargetBytesAdded", "numTargetBytesRemoved", "executionTimeMs",
    "scanTimeMs", "rewriteTimeMs",
)


def last_commit(spark, path: str) -> dict[str, Any]:
    """Version, operation and the MERGE-relevant operation metrics of a Delta table's last commit."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history(1).select("version", "operation", "operationMetrics").first()
    metrics = row["operationMetrics"] or {}
    return {"version": int(row["version"]), "operation": row["operation"],
            **{k: int(metrics[k]) for k in MERGE_METRICS if k in metrics}}


def _dir_bytes(path: Path) -> tuple[int, int, int]:
    """(data file bytes, _delta_log bytes, file count) under ``path``."""
    data = logb = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            size = (Path(root) / name).stat().st_size
            files += 1
            if "_delta_log" in Path(root).parts:
                logb += size
            elif not name.endswith(".crc"):
                data += size
    return data, logb, files


def table_sizes(spark, tables_root: str) -> dict[str, dict[str, Any]]:
    """Per Delta table: rows, live bytes and files (current snapshot), bytes on disk, bytes per row."""
    out = {}
    root = Path(tables_root)
    for folder in sorted(p for p in root.iterdir() if (p / "_delta_log").is_dir()):
        detail = spark.sql(f"DESCRIBE DETAIL delta.`{folder}`").select("sizeInBytes", "numFiles", "partitionColumns").first()
        rows = spark.read.format("delta").load(str(folder)).count()
        data_bytes, log_bytes, files = _dir_bytes(folder)
        entry = {
            "rows": rows,
            "live_bytes": int(detail["sizeInBytes"]),
            "live_files": int(detail["numFiles"]),
            "partition_columns": list(detail["partitionColumns"]),
            "disk_data_bytes": data_bytes,
            "disk_log_bytes": log_bytes,
            "disk_files": files,
            "live_bytes_per_row": int(detail["sizeInBytes"]) / rows if rows else None,
        }
        out[folder.name] = entry
    return out


def history_shape(spark, settings) -> dict[str, Any]:
    """Rows of the ``user_token_history`` view and the mean / max days of history per row."""
    from pyspark.sql import functions as F

    from pipelines.lake.views import read_view

    row = read_view(Lake(spark, settings), "user_token_history").agg(
        F.count(F.lit(1)).alias("rows"), F.avg("n_days").alias("mean_days"), F.max("n_days").alias("max_days"),
        F.sum("n_days").alias("day_tokens")).first()
    return {"rows": int(row["rows"]), "mean_days": float(row["mean_days"] or 0), "max_days": int(row["max_days"] or 0),
            "day_entries": int(row["day_tokens"] or 0)}


def run_date(spark, settings, info, event_date: str, steps=("stage", "quality", "publish")) -> dict[str, Any]:
    """The job's three steps for one date, each timed; plus MERGE metrics and throughput."""
    from pipelines.lake import tables
    from pipelines.night.day_run import DayRun, default_run_id
    from pipelines.night.publish import publish
    from pipelines.night.quality import check_quality
    from pipelines.night.stage import stage

    run = DayRun(spark, settings, event_date, default_run_id(event_date), info)
    out: dict[str, Any] = {"event_date": event_date, "steps": list(steps)}
    if "stage" in steps:
        with Stopwatch() as sw:
            staged = stage(run)
        out["stage_seconds"] = sw.seconds
        out["stage"] = {k: v for k, v in staged.__dict__.items() if k != "seconds"}
    if "quality" in steps:
        with Stopwatch() as sw:
            metrics = check_quality(run)
        out["quality_seconds"] = sw.seconds
        out["quality"] = {k: metrics[k] for k in ("active_users", "token_rows", "collision_rate", "quarantine_rate",
                                                   "min_level_utilization", "rows_per_source", "utilization")}
    history_before = history_shape(spark, settings)
    if "publish" in steps:
        with Stopwatch() as sw:
            published = publish(run)
        out["publish_seconds"] = sw.seconds
        for part in ("user_day_tokens_seconds", "user_tokens_seconds"):
            if part in published:
                out[part] = published[part]
        out["day_tokens_commit"] = last_commit(spark, Lake(spark, settings).path(tables.USER_DAY_TOKENS.name))
        out["history_before"] = history_before
        out["history_after"] = history_shape(spark, settings)
    if "quality" in steps:
        per_source = out["quality"]["rows_per_source"]
        text_rows = sum(n for s, n in per_source.items() if s != run.sources.tabular.name)
        out["text_documents"] = text_rows
        out["tabular_rows"] = per_source.get(run.sources.tabular.name, 0)
        if "stage_seconds" in out:
            out["stage_documents_per_s"] = text_rows / out["stage_seconds"]
            out["stage_token_rows_per_s"] = out["quality"]["token_rows"] / out["stage_seconds"]
    out["total_seconds"] = sum(out.get(f"{s}_seconds", 0.0) for s in ("stage", "quality", "publish"))
    log.info("pipeline: %s %s: %s", event_date, "+".join(steps),
             {k: round(v, 2) for k, v in out.items() if k.endswith("_seconds") or k.endswith("_per_s")})
    return out


def bench_pipeline(params: dict[str, Any], tmp_root: Path | None = None,
                   trained: TrainedLake | None = None) -> dict[str, Any]:
    """The benchmark (see the module docstring); returns the JSON payload's ``results``.
    ``trained``: a lake already written and trained (steps 1-2 are then a copy of it, not measured)."""
    import torch

    from benchmarks.common import pipeline_settings, train_promoted
    from pipelines.night.day_run import load_tokenizer_info
    from pipelines.world import load_world_config, write_world

    own_tmp = tmp_root is None
    tmp_root = Path(tempfile.mkdtemp(prefix="u2qt-bench-pipeline-")) if own_tmp else Path(tmp_root)
    default_threads = torch.get_num_threads()
    try:
        spark = spark_session(tmp_root)
        if trained is None:
            world = load_world_config(repo_path(params["world"]), params.get("world_overrides"))
            settings = pipeline_settings(tmp_root / "lake", tmp_root / "model", params.get("settings_overrides"))
        else:
            world, settings = trained.world, trained.copy_to(tmp_root, params.get("settings_overrides"))
        out: dict[str, Any] = {
            "parameters": {
                # a reused lake's world is its own, not the configured one
                "world": str(params["world"]) if trained is None else str(trained.root),
                "world_overrides": (params.get("world_overrides") or {}) if trained is None else {},
                "n_users": world.n_users, "n_days": world.n_days,
                "settings_overrides": params.get("settings_overrides") or {},
                "spark_profile": settings.spark_profile,
                "spark_master": spark.sparkContext.master,
                "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions"),
                "inference": settings.inference.model_dump(),
                "training_preset": settings.training.preset,
                "max_docs_per_source": settings.training.max_docs_per_source,
                "driver_torch_threads": int(params.get("driver_torch_threads", 1)),
                "rerun": params.get("rerun", "publish"),
            }
        }

        # the MRQ-VAE trains on the driver; torch's default (all cores) competes with the Spark
        # workers of the same machine, so the driver's thread count is a benchmark parameter
        torch.set_num_threads(int(params.get("driver_torch_threads", 1)))
        if trained is not None:
            out["world"] = out["train"] = {"reused": str(trained.root)}
        else:
            with Stopwatch() as sw:
                summary = write_world(spark, world, settings.tables_root)
            out["world"] = {"seconds": sw.seconds, "rows": summary.rows, "malformed_rows": summary.malformed_total}
            raw = out["world"]["rows"].get("raw_events", 0)
            out["world"]["raw_events_per_s"] = raw / sw.seconds if sw.seconds else None
            log.info("pipeline: world %d users x %d days written in %.1fs: %s", world.n_users, world.n_days, sw.seconds, summary.rows)

            with Stopwatch() as sw:
                training = train_promoted(spark, settings)
            out["train"] = {
                "seconds": sw.seconds, "embed_seconds": training["embed_seconds"], "train_seconds": training["train_seconds"],
                "training_rows": training["training_rows"], "steps": training["steps"],
                "embed_documents_per_s": sum(n for s, n in training["training_rows"].items() if s != "tabular")
                / training["embed_seconds"] if training["embed_seconds"] else None,
                "utilization_per_codebook": {n: c["utilization"] for n, c in training["metrics"]["per_codebook"].items()},
                "collision_rate_per_source": {s: v["collision_rate"] for s, v in training["metrics"]["per_source"].items()},
            }
            log.info("pipeline: trained in %.1fs (embed %.1fs, MRQ-VAE %.1fs) on %s", sw.seconds,
                     training["embed_seconds"], training["train_seconds"], training["training_rows"])

        with Stopwatch() as sw:
            info = load_tokenizer_info(settings)
        out["load_tokenizer_info_seconds"] = sw.seconds
        dates = [d.isoformat() for d in world.history_dates()]
        days = []
        for d in dates:
            days.append(run_date(spark, settings, info, d))
        rerun_steps = ("stage", "quality", "publish") if params.get("rerun") == "day" else ("publish",)
        rerun = run_date(spark, settings, info, dates[-1], steps=rerun_steps)
        rerun["rerun"] = True
        days.append(rerun)
        out["days"] = days
        out["table_sizes"] = table_sizes(spark, settings.tables_root)
        udt = out["table_sizes"].get("user_day_tokens", {})
        out["bytes_per_token_row"] = udt.get("live_bytes_per_row")

        return out
    finally:
        torch.set_num_threads(default_threads)
        if own_tmp:
            shutil.rmtree(tmp_root, ignore_errors=True)


def summary_lines(payload: dict) -> list[str]:
    r = payload["results"]
    p = r["parameters"]
    lines = [f"bench_pipeline: {p['n_users']} users x {p['n_days']} days, wall {payload.get('wall_seconds', 0):.0f}s"]
    if "reused" in r["world"]:
        lines.append(f"  world and tokenizer copied from {r['world']['reused']}")
    else:
        lines += [f"  world write {r['world']['seconds']:.1f}s ({r['world']['rows'].get('raw_events')} raw_events)",
                  f"  train {r['train']['seconds']:.1f}s (embed {r['train']['embed_seconds']:.1f}s at "
                  f"{r['train']['embed_documents_per_s']:.1f} docs/s, MRQ-VAE {r['train']['train_seconds']:.1f}s)"]
    for d in r["days"]:
        tag = " (re-run)" if d.get("rerun") else ""
        parts = [f"{k[:-8]} {d[k]:.1f}s" for k in ("stage_seconds", "quality_seconds", "publish_seconds", "user_day_tokens_seconds") if k in d]
        extra = f", {d['stage_documents_per_s']:.1f} docs/s through stage" if "stage_documents_per_s" in d else ""
        commit = d.get("day_tokens_commit", {})
        lines.append(f"  {d['event_date']}{tag}: " + ", ".join(parts) + extra +
                     f"; user_day_tokens v{commit.get('version')} {commit.get('operation')}")
    if r.get("bytes_per_token_row"):
        lines.append(f"  user_day_tokens: {r['bytes_per_token_row']:.1f} live bytes per token row")
    return lines


def run(config: dict[str, Any], out_dir: str | Path, tmp_root: Path | None = None,
        trained: TrainedLake | None = None) -> dict:
    """Run ``config['pipeline']`` and write ``<out_dir>/bench_pipeline.json``."""
    return run_benchmark("bench_pipeline", lambda: bench_pipeline(config["pipeline"], tmp_root, trained), out_dir,
                         summary_lines)


def main(argv: list[str] | None = None) -> int:
    return simple_main(__doc__, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
