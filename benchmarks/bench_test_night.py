"""What one night of the test suite costs under Spark settings: the tiny world's first two
dates (stage, gates, publish each) on a copy of a trained lake, once per variant, each variant in
a fresh local Spark JVM (a subprocess, so no variant inherits another's JIT or codegen cache).

    python -m benchmarks.bench_test_night [--out bench_results] [--lake ROOT] [--nights N]
        [--no-default-variants] [--variant NAME k=v ...]

``--nights N``: N nights in each JVM, the two dates in turn (a date again is a re-run of it, as the
suite's tests do), to see a long-lived JVM's later nights, like the session's (default 2).

``--lake``: a folder holding ``lake/`` and ``model/`` written and trained like the tests'
``trained_lake`` fixture (default: written and trained here first, about 1 CPU-min). Variants:
``as_tests_were`` (the test session's Spark settings before interpreted expressions) and
``tests`` (``tests.conftest.TINY_DATA_SQL_CONF`` added), plus ``--variant NAME k=v ...`` of your
own. Reports CPU-seconds of the whole process tree (:class:`benchmarks.cpu_meter.TreeCpuMeter`)
and wall seconds, and the Spark jobs, per step and date; writes
``<out>/bench_test_night.json``. The first date is the cold one (every night of a fresh JVM: the
CLI, Airflow and spark-submit tests), the second the warm one (later nights of the session).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import bench_arguments, repo_path, run_benchmark

STEPS = ("stage", "quality", "publish")


def night(lake_root: Path, work: Path, conf: dict[str, str], nights: int = 2) -> dict:
    """``nights`` nights over the first two dates in this process's own Spark session (the
    subprocess side of :func:`measure`)."""
    import shutil

    from benchmarks.cpu_meter import TreeCpuMeter
    from pipelines.night.day_run import open_run
    from pipelines.night.publish import publish
    from pipelines.night.quality import check_quality
    from pipelines.night.stage import stage
    from pipelines.runtime.spark_session import get_spark
    from pipelines.world import load_world_config
    from tests.conftest import SESSION_CONF, TINY_WORLD, dates_of, make_settings

    shutil.copytree(lake_root, work)
    spark = get_spark("local", app_name="u2qt-bench-test-night", extra_conf={
        "spark.sql.warehouse.dir": str(work / "warehouse"), **SESSION_CONF, **conf})
    settings = make_settings(work / "lake", work / "model")
    dates = []
    two = dates_of(load_world_config(TINY_WORLD))[:2]
    for i in range(nights):
        event_date = two[i % 2]
        run = open_run(spark, settings, event_date, f"bench-{i}-{event_date}", None)
        jobs_before = jobs_started(spark)
        steps = {}
        for name, step in zip(STEPS, (stage, check_quality, publish)):
            step_jobs_before = jobs_started(spark)
            with TreeCpuMeter() as meter:
                step(run)
            steps[name] = {"cpu_s": round(meter.cpu_s, 2), "wall_s": round(meter.wall_s, 2),
                           "spark_jobs": jobs_started(spark) - step_jobs_before}
        dates.append({"event_date": event_date, "steps": steps,
                      "cpu_s": round(sum(s["cpu_s"] for s in steps.values()), 2),
                      "wall_s": round(sum(s["wall_s"] for s in steps.values()), 2),
                      "spark_jobs": jobs_started(spark) - jobs_before})
    spark.stop()
    return {"dates": dates, "cpu_s": round(sum(d["cpu_s"] for d in dates), 2)}


def jobs_started(spark) -> int:
    """Spark jobs this session has started so far, job groups included (the stage runs its write
    in one: ``pipelines.runtime.progress.spark_progress``)."""
    return spark.sparkContext._jsc.sc().dagScheduler().numTotalJobs()


def trained_lake(root: Path) -> Path:
    """The tiny world written and a tiny tokenizer trained and promoted, as the tests' fixture."""
    from pipelines.runtime.spark_session import get_spark
    from pipelines.world import load_world_config
    from tests.conftest import TINY_WORLD, write_trained_lake

    spark = get_spark("local", app_name="u2qt-bench-test-night-lake",
                      extra_conf={"spark.sql.warehouse.dir": str(root / "warehouse")})
    write_trained_lake(spark, root, load_world_config(TINY_WORLD), reason="bench_test_night")
    spark.stop()
    return root


def measure(lake: Path, variants: dict[str, dict[str, str]], work: Path, nights: int = 2) -> dict:
    """Each variant's ``nights`` nights in a subprocess of its own, one after the other. Its driver JVM
    gets only the variant's conf: ``$SPARK_SUBMIT_OPTS`` is emptied, as importing
    ``tests.conftest`` would otherwise set the tests' ``-Dspark.sql...`` flags in it."""
    results = {}
    for name, conf in variants.items():
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_test_night", "--night", str(lake),
                               str(work / name), json.dumps(conf), str(nights)], capture_output=True, text=True,
                              cwd=repo_path("."), env={**os.environ, "SPARK_SUBMIT_OPTS": ""})
        if proc.returncode:
            raise RuntimeError(f"variant {name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        results[name] = {"conf": conf, **json.loads(proc.stdout.strip().splitlines()[-1]),
                         "process_wall_s": round(time.perf_counter() - started, 1)}
    base = next(iter(results.values()))["cpu_s"]
    for result in results.values():
        result["cpu_vs_first_variant"] = round(result["cpu_s"] / base, 3)
    return results


def summary(payload: dict) -> list[str]:
    lines = []
    for name, result in payload["results"].items():
        per_date = ", ".join(f"{d['event_date']}: {d['cpu_s']} CPU-s / {d['wall_s']} s wall / {d['spark_jobs']} jobs"
                             for d in result["dates"])
        lines.append(f"{name}: {result['cpu_s']} CPU-s ({result['cpu_vs_first_variant']}x) [{per_date}]")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--night"]:                     # the subprocess of one variant
        print(json.dumps(night(Path(argv[1]), Path(argv[2]), json.loads(argv[3]), int(argv[4]))))
        return 0
    from tests.conftest import TINY_DATA_SQL_CONF

    def add_arguments(parser):
        parser.add_argument("--lake", default=None, help="a trained tiny-world lake (lake/ and model/)")
        parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME k=v",
                            help="another variant: a name, then Spark conf pairs")
        parser.add_argument("--nights", type=int, default=2, help="nights per JVM, the two dates in turn")
        parser.add_argument("--no-default-variants", action="store_true",
                            help="only the --variant ones (not as_tests_were and tests)")

    args, _config = bench_arguments(__doc__.splitlines()[0], argv, add_arguments)
    variants = {} if args.no_default_variants else {"as_tests_were": {}, "tests": dict(TINY_DATA_SQL_CONF)}
    for name, *pairs in args.variant:
        variants[name] = dict(pair.split("=", 1) for pair in pairs)
    with tempfile.TemporaryDirectory(prefix="u2qt-bench-test-night-") as tmp:
        lake = Path(args.lake) if args.lake else trained_lake(Path(tmp) / "trained")
        run_benchmark("bench_test_night", lambda: measure(lake, variants, Path(tmp) / "runs", args.nights), args.out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
