"""Shared fixtures: a real local Spark session with Delta, per-test lake folders, pipeline
settings pointing at them, a tiny synthetic world and a tiny trained tokenizer.

Nothing here mocks Spark, Delta, Airflow or the models: the fixtures build the real things,
small. Heavy fixtures are session-scoped and written once under a session tmp folder.
"""
from __future__ import annotations

import fcntl
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.jvm_class_archive import JIT_AND_GC_OPTS
from tests.jvm_class_archive import jvm_flags as class_archive_flags

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_WORLD = REPO_ROOT / "conf" / "world" / "tiny.yaml"
TINY_PRESET = "conf/model/tiny.yaml"

# JVM flags for the short-lived JVMs the tests start (the CLI, u2qt-submit and spark-sql
# subprocesses, the Airflow task processes, the standalone cluster's drivers, executors, master and
# worker): the client JIT only and one GC thread. Such a JVM runs one or two steps, so the
# optimizing JIT's compile threads cost more CPU on 2 shared cores than they save: one date's
# init/stage/quality/publish in one local[1] JVM took 124-128 s with these against 216-236 s
# without, back to back on the same machine (load 7-8); a fresh local[2] driver used 105 CPU-s
# against 174 writing the collide world and running its first date (side by side, load 18-20).
# With them, when `make test` has built it, the class-data-sharing archive of
# tests/jvm_class_archive.py (Spark's and Delta's classes parsed and verified once: about 7 CPU-s
# less per cold JVM). Tuning only: nothing the tests check depends on it, and the shipped profiles
# (conf/spark) do not set it.
CLASS_ARCHIVE_FLAGS = class_archive_flags()   # stats the ~300 jars once per process
SHORT_JVM_OPTS = " ".join(filter(None, [JIT_AND_GC_OPTS, CLASS_ARCHIVE_FLAGS]))
# ... and for the session's own JVM, which lives for the whole suite (dozens of nights per xdist
# worker), the optimizing JIT too (two compiler threads): its first night costs more, its later
# ones less. Six nights of the tiny world in one fresh JVM, CPU-s per night: 45.5, 40.8, 32.3,
# 25.3, 32.3, 29.4 (205.7) with the client JIT only; 67.4, 31.4, 23.4, 20.3, 24.8, 20.9 (188.2)
# with both (`python -m benchmarks.bench_test_night --nights 6 --no-default-variants --variant
# ...`, 2026-12-07, quiet machine); in a one-off run of whole run_day nights, 46.1-33.0 against
# 36.7-20.2 from the second night on. The whole suite: 48 min 52 s -> 41 min 46 s with the class
# archive and torch-free config imports of the same change (README, Tests).
# The JIT still compiled for half of those nights' CPU: 71-76 s of 135-138 CPU-s over six nights
# (-XX:+CITime: 7,200 methods through C2 for 56 s, 45,000 through C1 for 17 s). With every compile
# threshold 4x higher (-XX:CompileThresholdScaling=4) it compiles only the code the nights run
# most: 38 s of compiling, 126.0 CPU-s for the six nights (41.2, 22.0, 19.1, 15.0, 15.5, 13.2;
# 130.4 in a third run, 125.6 with Delta snapshotPartitions=1 too) against 138.3 and 135.3 (47.2,
# 23.3, 18.7, 15.3, 16.7, 14.2): 7 % less, each in a fresh JVM one after the other on a quiet
# machine (bench_test_night's --night, 2026-12-07); 8x, only the C2 thresholds 5x higher, or a
# young generation half the heap (-XX:NewRatio=1) did no better (128.1, 127.4, 130.2). An hour
# later, the machine slowed down by its neighbours, a back-to-back pair gave 231.9 against 238.7
# (3 % less). The short-lived JVMs' client JIT gained nothing from it (one night: 31.1-33.5 CPU-s
# with 2x or 4x, 31.5-33.7 without), so they keep their flags.
SESSION_JVM_OPTS = " ".join(filter(None, ["-XX:+UseSerialGC -XX:CICompilerCount=2 -XX:CompileThresholdScaling=4",
                                          CLASS_ARCHIVE_FLAGS]))
# Spark SQL for tiny data: expressions interpreted, not compiled. On a night of a few dozen users
# Spark spent more CPU generating, regex-formatting and Janino-compiling projection code (per task,
# before its cache lookup) than running it: the tiny world's first two dates took 160.1 CPU-s with
# codegen and 107.2 without (0.67x; the cold first date 95.5 -> 60.6, the second 64.6 -> 46.6),
# 142.1 against 110.8 (0.78x) and 148.6 against 121.5 (0.82x) in two more runs, each variant in a
# fresh JVM, one after the other on a quiet machine (`make bench-test-night`, 2026-12-07). Spark's
# own suites run both modes, with the same results by Spark's contract. Tuning only, like the JIT
# flags: the shipped profiles (conf/spark), the demo and the benchmarks keep codegen.
TINY_DATA_SQL_CONF = {"spark.sql.codegen.factoryMode": "NO_CODEGEN", "spark.sql.codegen.wholeStage": "false"}
# ... both also for every JVM a test starts through spark-submit (the CLI and u2qt-submit
# subprocesses, spark-sql): the launcher adds $SPARK_SUBMIT_OPTS to the driver JVM it starts, and
# Spark reads ``-Dspark.*`` system properties as conf. The deployment tests' services do not
# inherit it (tests/deploy/conftest.py) and set their own.
os.environ.setdefault("SPARK_SUBMIT_OPTS", " ".join([SHORT_JVM_OPTS, *(f"-D{k}={v}" for k, v in TINY_DATA_SQL_CONF.items())]))
#: the test session's Spark conf besides its warehouse and TINY_DATA_SQL_CONF (also what
#: benchmarks/bench_test_night.py starts each variant's session with). One task slot (local[1],
#: the local profile has two): each xdist worker's session already shares two cores with the other
#: one, and one slot means one Python worker, so a stage whose workers Spark ended (idle 60 s)
#: loads the encoder once, not twice. Still two partitions per shuffle, run one after the other.
#: Six nights, CPU-s: 152.6 and 147.6 against 161.1 and 156.6 with local[2] (0.947x, 0.943x; the
#: cold first night 48.2-48.7 against 55.5-56.7, the later ones equal), each variant in a fresh JVM,
#: one after the other, twice, quiet machine (bench_test_night --nights 6, 2026-12-07). Turning
#: adaptive execution off as well halved the Spark jobs (82 against 162 on the first night) but not
#: the CPU (0.887x, then 1.018x), so the tests keep Spark's default AQE.
SESSION_CONF = {"spark.master": "local[1]", "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
                "spark.driver.memory": "2g", "spark.driver.extraJavaOptions": SESSION_JVM_OPTS}


def world_layout(encoder_dim: int = 384):
    """The shipped sources config's :class:`~u2qt_core.config.SourceLayout` (the synthetic world's
    five text sources + tabular) with text inputs ``encoder_dim`` wide: what a preset is loaded with."""
    from pipelines.config.settings import load_sources

    return load_sources().layout(encoder_dim)


def pytest_collection_modifyitems(config, items) -> None:
    """Files holding a ``slow`` test run first, those starting real servers (tests/deploy) first
    of all; the order inside each file is kept. Under pytest-xdist (make test: ``--dist loadfile
    --no-loadscope-reorder``, which keeps this order) the longest files then overlap the many
    short ones instead of running alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.path not in slow_files, "deploy" not in item.path.parts))


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One Delta-enabled local SparkSession for the whole test session."""
    import logging

    from pipelines.runtime.spark_session import get_spark

    logging.getLogger("py4j").setLevel(logging.WARNING)  # its close() logs after pytest closed the streams

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = get_spark("local", app_name="u2qt-tests", extra_conf={
        "spark.sql.warehouse.dir": str(warehouse),
        **SESSION_CONF,
        **TINY_DATA_SQL_CONF,
    })
    yield session
    session.stop()


def make_settings(tables_root: Path, model_dir: Path, **overrides):
    """Pipeline settings on the repo's conf, pointed at test folders, with the tiny preset."""
    from pipelines.config.settings import load_settings
    from u2qt_core.config_loader import deep_merge

    base = {
        "tables_root": str(tables_root),
        "model_dir": str(model_dir),
        "spark_profile": "local",
        "inference": {"partitions": 2, "batch_rows": 64},
        "training": {"preset": TINY_PRESET, "max_docs_per_source": 200},
        # the tiny world (a few dozen users, K=16) collides far more than the paper's < 0.5 %:
        # its tests check the pipeline, not tokenizer quality, so the collision gate is open
        "quality": {"max_collision_rate": 1.0},
    }
    return load_settings(REPO_ROOT / "conf" / "pipeline.yaml", deep_merge(base, overrides))


@pytest.fixture(scope="session")
def tiny_world_config():
    from pipelines.world import load_world_config

    return load_world_config(TINY_WORLD)


def build_once(tmp_path_factory, name: str, build: Callable[[Path], Any]) -> Any:
    """A read-only session fixture built once per test run, however many pytest-xdist workers
    there are: the first worker to need it runs ``build(folder)`` under an exclusive lock in the
    run's shared temp folder and pickles its result there; the others wait and load that. (Each
    worker building its own copy cost ~4 min of a 2-core machine's make test.)"""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, result = shared / name, shared / f"{name}.pkl"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)     # released when the file closes
        if result.exists():
            return pickle.loads(result.read_bytes())
        shutil.rmtree(folder, ignore_errors=True)      # a build that failed before is started over
        folder.mkdir()
        value = build(folder)
        result.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def trained_lake(spark, tmp_path_factory, tiny_world_config):
    """A tiny world written as Delta tables plus a tiny tokenizer trained on it and promoted to
    the registry alias (read-only: copy it with :func:`fresh_lake` before writing). The
    promotion is forced: the gates are tested in tests/pipelines/test_lifecycle.py."""

    return build_once(tmp_path_factory, "trained-lake", lambda root: write_trained_lake(spark, root, tiny_world_config))


def write_trained_lake(spark, root: Path, world, reason: str = "test fixture") -> dict:
    """``world`` written under ``root/lake``, a tiny tokenizer trained on it and promoted (forced)
    under ``root/model``: the :func:`trained_lake` fixture, and what bench_test_night starts from."""
    from pipelines.tokenizer.registry import promote
    from pipelines.tokenizer.train_job import train
    from pipelines.world import write_world

    settings = make_settings(root / "lake", root / "model")
    write_world(spark, world, settings.tables_root)
    summary = train(spark, settings)
    promote(settings, summary["tokenizer_version"], force=True, reason=reason)
    return {"root": root, "settings": settings, "summary": summary, "world": world}


@pytest.fixture
def fresh_lake(trained_lake, tmp_path):
    """A private copy of the trained lake for one test (outputs written there stay there)."""
    root = tmp_path / "lake-copy"
    shutil.copytree(trained_lake["root"], root)
    return make_settings(root / "lake", root / "model")


def dates_of(world) -> list[str]:
    """A world config's dates, first to last, as ISO strings."""
    return [d.isoformat() for d in world.history_dates()]


@pytest.fixture
def world_dates(tiny_world_config) -> list[str]:
    return dates_of(tiny_world_config)


@pytest.fixture(scope="session")
def two_days(trained_lake, tmp_path_factory, spark):
    """Both world dates processed one by one, in order, on a private copy of the trained lake
    (read-only for the tests: the reference the other orders, the backfill and the standalone
    cluster's spark-submit run are compared with)."""
    def build(root):
        from pipelines.night.daily_job import run_day

        shutil.copytree(trained_lake["root"], root, dirs_exist_ok=True)
        settings = make_settings(root / "lake", root / "model")
        dates = dates_of(trained_lake["world"])
        metrics = [run_day(spark, settings, d, run_id=f"test-{d}") for d in dates]
        return {"settings": settings, "dates": dates, "metrics": metrics}

    return build_once(tmp_path_factory, "two-days", build)
