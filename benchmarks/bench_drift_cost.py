"""What watching the tokenizer age adds to a night: the quality step's CPU-seconds (this process,
its Spark JVM and Python workers: :class:`benchmarks.cpu_meter.TreeCpuMeter`) and wall seconds
with :func:`pipelines.night.drift.measure` and with it replaced by a no-op, alternated.

    python -m benchmarks.bench_drift_cost LAKE_ROOT MODEL_DIR DATE [--reps 3]

``LAKE_ROOT`` / ``MODEL_DIR``: a lake with a promoted tokenizer and ``raw_events`` for ``DATE``
(e.g. the tests' ``two-days`` fixture folder). Both are copied first and the copy's bundle is
registered and promoted in the copy's registry under its own model name; the date is staged once in
the copy (inference is not measured), then the quality step runs ``--reps`` times each way.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.cpu_meter import TreeCpuMeter
from pipelines.lake.lake import Lake


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake_root")
    parser.add_argument("model_dir")
    parser.add_argument("date")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)

    from pipelines.night import drift, quality
    from pipelines.night.day_run import open_run
    from pipelines.night.stage import stage
    from pipelines.runtime.spark_session import get_spark
    from tests.conftest import make_settings

    tmp = Path(tempfile.mkdtemp(prefix="u2qt-drift-cost-"))
    try:
        shutil.copytree(args.lake_root, tmp / "lake")
        shutil.copytree(args.model_dir, tmp / "model")
        # the copy's own registry entry: the original's points at the original bundle folder
        settings = make_settings(tmp / "lake", tmp / "model", registry={"model_name": "u2qt-bench-drift-cost"})
        from pipelines.tokenizer import registry

        bundle = next((tmp / "model" / "bundles").glob("u2qt-*"))
        registry.register(settings, bundle.name, bundle, {}, {})
        registry.promote(settings, bundle.name, force=True, reason="bench_drift_cost")
        spark = get_spark(settings.spark_profile, app_name="u2qt_bench_drift_cost")
        run = open_run(spark, settings, args.date, "bench-drift-cost")
        stage(run)
        measured = drift.measure
        seconds: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
        quality.check_quality(run)   # warm-up: JIT, first table reads
        for _ in range(args.reps):
            for way in ("without", "with"):
                drift.measure = measured if way == "with" else (lambda runs, staged: {})
                with TreeCpuMeter() as meter:
                    quality.check_quality(run)
                seconds[way].append((meter.cpu_s, meter.wall_s))
        drift.measure = measured
        rows = spark.read.format("delta").load(Lake(spark, settings).path("staging_day_tokens")).count()
        out = {"date": args.date, "staged_rows": rows, "reps": args.reps,
               **{f"{way}_cpu_s": statistics.median(c for c, _ in v) for way, v in seconds.items()},
               **{f"{way}_wall_s": statistics.median(w for _, w in v) for way, v in seconds.items()},
               "raw": seconds}
        out["added_cpu_s"] = out["with_cpu_s"] - out["without_cpu_s"]
        out["added_wall_s"] = out["with_wall_s"] - out["without_wall_s"]
        print(json.dumps(out, indent=2))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
