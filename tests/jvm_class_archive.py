"""A class-data-sharing archive for the JVMs the tests start (the JDK's dynamic AppCDS).

Every test JVM (the session's driver, the CLI, u2qt-submit and spark-sql subprocesses, the
Airflow task processes, the standalone cluster) loads and verifies the same ~20,000 Spark and
Delta classes from jars before it does anything. A dynamic CDS archive holds them already parsed
and verified: a cold local session doing a Delta write, MERGE and read took 28.4 / 31.6 CPU-s
without it and 21.0 / 24.7 with it, alternating, on the 2-core machine (2026-12-07, load 1.4-1.7).

``make test`` builds the archive once (``python -m tests.jvm_class_archive``, ~40 s: one JVM runs
a small Delta and pandas-over-Arrow workload with ``-XX:ArchiveClassesAtExit``) into the cache, under a
name keyed by the Java binary and the jars, so a changed JDK, Spark or Delta gets a new one.
:func:`jvm_flags` then gives the flags to use it, or nothing when it is missing. A JVM whose
class path does not match the archive's ignores it (its CDS log lines are switched off), so the
flags are safe on every test JVM. Tuning only, like the JIT flags beside it in tests/conftest.py:
nothing the tests check depends on it, and the shipped profiles do not set it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: the JIT and GC flags of the short-lived test JVMs (tests/conftest.py: SHORT_JVM_OPTS), also the
#: archive workload's (the session's own JVM: SESSION_JVM_OPTS)
JIT_AND_GC_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def _jars() -> list[Path]:
    import pyspark

    from pipelines.runtime.spark_session import delta_jars

    return sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar")) + delta_jars()


def archive_path() -> Path | None:
    """Where this Java and these jars' archive lives (``None`` when Java or the jars are missing)."""
    from pipelines.runtime.spark_session import cache_root
    from u2qt_core.errors import ConfigError

    java = shutil.which("java", path=str(Path(os.environ["JAVA_HOME"]) / "bin") if os.environ.get("JAVA_HOME") else None)
    if not java:
        return None
    java = os.path.realpath(java)
    try:
        parts = [java, *(f"{j}:{j.stat().st_size}:{j.stat().st_mtime_ns}" for j in _jars()),
                 str(Path(java).stat().st_mtime_ns)]
    except (ConfigError, OSError):   # no Delta jars yet (make setup not run), or one vanished: no archive
        return None
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return cache_root() / "cds" / f"spark-{key}.jsa"


def jvm_flags() -> str:
    """The flags that make a JVM map the archive, or ``""`` when it has not been built."""
    path = archive_path()
    return f"-XX:SharedArchiveFile={path} {QUIET}" if path and path.exists() else ""


def _workload(archive: Path, work: Path) -> None:
    """The classes to archive: a local Delta session writing, merging, deleting and reading, and a
    pandas function over Arrow (what a night's steps do, at a few rows)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from pipelines.runtime.spark_session import get_spark

    spark = get_spark("local", app_name="u2qt-class-archive", extra_conf={
        "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
        "spark.sql.warehouse.dir": str(work / "warehouse"),
        "spark.driver.extraJavaOptions": f"{JIT_AND_GC_OPTS} -XX:ArchiveClassesAtExit={archive}"})

    table = str(work / "table")
    rows = spark.range(200).selectExpr("id", "id % 7 AS k", "CAST(id AS STRING) AS s", "DATE'2026-01-05' AS event_date")
    rows.write.format("delta").partitionBy("event_date").save(table)
    delta = DeltaTable.forPath(spark, table)
    (delta.alias("t").merge(rows.where("k = 3").withColumn("s", F.lit("x")).alias("u"), "t.id = u.id")
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    delta.delete("k = 5")
    read = spark.read.format("delta").load(table).select("id", "k", "s")
    read.mapInPandas(lambda batches: (b.assign(v=b["id"] + 1.0) for b in batches), "id long, k long, s string, v double") \
        .groupBy("k").agg(F.sum("v"), F.count_distinct("s")).collect()
    delta.history(5).collect()
    spark.read.json(f"{table}/_delta_log/00000000000000000000.json").collect()
    gateway = spark.sparkContext._gateway
    spark.stop()
    gateway.shutdown()
    gateway.proc.stdin.close()      # the JVM exits at EOF on its stdin and writes the archive then
    gateway.proc.wait(timeout=600)


def build() -> Path | None:
    """Build the archive unless it exists; returns its path (``None``: Java or the jars missing,
    or this JDK could not write it, which only leaves the test JVMs as they were)."""
    path = archive_path()
    if path is None or path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path
        partial = path.with_suffix(f".partial-{os.getpid()}")
        with tempfile.TemporaryDirectory(prefix="u2qt-class-archive-") as tmp:
            proc = subprocess.run([sys.executable, "-m", "tests.jvm_class_archive", "--workload", str(partial), tmp],
                                  env={**os.environ, "SPARK_SUBMIT_OPTS": ""}, cwd=Path(__file__).resolve().parents[1],
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not partial.exists():
                partial.unlink(missing_ok=True)
                print(f"no class archive (exit {proc.returncode}): {proc.stderr[-1500:]}", file=sys.stderr)
                return None
        for stale in path.parent.glob("spark-*.jsa"):
            stale.unlink()
        os.replace(partial, path)
    return path


def main(argv: list[str]) -> int:
    if argv[:1] == ["--workload"]:
        _workload(Path(argv[1]), Path(argv[2]))
        return 0
    path = build()
    size_mb = round(path.stat().st_size / 2**20) if path and path.exists() else 0
    print(json.dumps({"class_archive": str(path) if size_mb else None, "size_mb": size_mb}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
