"""Shared helpers of the benchmarks: settings (``conf/bench.yaml``), machine facts, interleaved
timing (median of repeats), and the JSON result files.

Timing rule: variants that are compared (thread counts, sorted vs unsorted, batch sizes) are
timed *interleaved* in the same run -- round ``r`` times every variant once, in an order that
rotates each round -- so background load on a shared machine hits them alike and their ratio
stays meaningful even when absolute numbers drift.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from u2qt_core.config_loader import deep_merge, read_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "conf" / "bench.yaml"

log = logging.getLogger("benchmarks")


# --------------------------------------------------------------------------- settings
def load_bench_config(path: str | Path | None = None, *, quick: bool = False) -> dict:
    """``conf/bench.yaml`` (or ``path``); with ``quick`` its ``quick:`` section is merged over it."""
    path = Path(path) if path else DEFAULT_CONFIG
    raw = read_yaml(path)
    quick_overrides = raw.pop("quick", {}) or {}
    return deep_merge(raw, quick_overrides) if quick else raw


def repo_path(path: str | Path) -> Path:
    """A config path: absolute as given, else relative to the repository root."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


# --------------------------------------------------------------------------- machine facts
def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_facts() -> dict[str, Any]:
    """What the numbers depend on: CPU, memory, library versions, device, torch threads, load."""
    import torch

    facts: dict[str, Any] = {
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1_5_15": load_average(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "git_commit": _git_commit(),
    }
    if torch.cuda.is_available():
        facts["cuda_device"] = torch.cuda.get_device_name(0)
    try:
        facts["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    for module in ("transformers", "numpy", "pyspark", "delta"):
        try:
            facts[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            try:
                from importlib.metadata import version

                facts[module] = version({"delta": "delta-spark"}.get(module, module))
            except Exception:  # noqa: BLE001 -- a missing version is not an error here
                pass
    return facts


# --------------------------------------------------------------------------- timing
def summarize(seconds: list[float], work: float | None = None, unit: str = "items") -> dict[str, Any]:
    """Median / min / max of repeat times; with ``work`` (items per repeat) also items per second."""
    median = statistics.median(seconds)
    out: dict[str, Any] = {
        "median_s": median,
        "min_s": min(seconds),
        "max_s": max(seconds),
        "repeats_s": [round(s, 6) for s in seconds],
    }
    if work is not None:
        out[f"{unit}_per_repeat"] = work
        out[f"{unit}_per_s_median"] = work / median if median > 0 else None
        out[f"{unit}_per_s_all"] = [round(work / s, 3) if s > 0 else None for s in seconds]
    return out


def time_interleaved(
    variants: dict[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 1,
    setup: dict[str, Callable[[], Any]] | None = None,
    sync: Callable[[], Any] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each variant, ``repeats`` rounds, variant order rotating per round.

    ``setup[name]`` runs (untimed) before each call of ``name`` (e.g. set torch threads);
    ``sync`` runs after each call inside the timed region (e.g. ``torch.cuda.synchronize``).
    """
    names = list(variants)
    setup = setup or {}

    def call(name: str) -> float:
        if name in setup:
            setup[name]()
        start = time.perf_counter()
        variants[name]()
        if sync:
            sync()
        return time.perf_counter() - start

    for name in names:
        for _ in range(warmup):
            log.debug("warm-up %s: %.3fs", name, call(name))
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(call(name))
            log.debug("round %d/%d %s: %.3fs", r + 1, repeats, name, times[name][-1])
    return times


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


# --------------------------------------------------------------------------- output
def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _jsonable(value.item())
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def write_result(out_dir: str | Path, name: str, payload: dict) -> Path:
    """Write ``<out_dir>/<name>.json`` (pretty, NaN -> null) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(_jsonable(payload), indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s", path)
    return path


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("py4j", "u2qt_core.quantization", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def bench_environment() -> None:
    """Offline model loading, quiet tokenizers; safe to call more than once."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def spark_session(tmp_root: Path, app_name: str = "u2qt-bench"):
    """The local Delta SparkSession of the benches (the active one if there is one)."""
    from pipelines.runtime.spark_session import get_spark

    return get_spark("local", app_name=app_name, extra_conf={
        "spark.sql.warehouse.dir": str(tmp_root / "spark-warehouse"),
    })


def fixed_plus_per_doc(docs: list[float], cpu_s: list[float]) -> dict[str, float]:
    """Least squares ``cpu_s = fixed_cpu_s + cpu_s_per_doc x docs`` over the sizes of a
    benchmark (one size: all of it per document)."""
    import numpy as np

    x, y = np.asarray(docs, dtype=float), np.asarray(cpu_s, dtype=float)
    slope, fixed = np.polyfit(x, y, 1) if len(x) > 1 else (y[0] / x[0], 0.0)
    return {"fixed_cpu_s": float(fixed), "cpu_s_per_doc": float(slope)}


# --------------------------------------------------------------------------- one benchmark run
def run_benchmark(name: str, measure: Callable[[], dict[str, Any]], out_dir: str | Path,
                  summary: Callable[[dict], list[str]] | None = None) -> dict[str, Any]:
    """Run ``measure()`` once and write ``<out_dir>/<name>.json`` with the machine and its load.

    The payload is ``{"benchmark", "machine", "load_average_before", "results", "wall_seconds",
    "load_average_after"}``; ``summary(payload)`` lines are logged when given.
    """
    bench_environment()
    payload: dict[str, Any] = {"benchmark": name, "machine": machine_facts(), "load_average_before": load_average()}
    started = time.perf_counter()
    payload["results"] = measure()
    payload["wall_seconds"] = time.perf_counter() - started
    payload["load_average_after"] = load_average()
    write_result(out_dir, name, payload)
    for line in (summary(payload) if summary else []):
        log.info("%s", line)
    return payload


def bench_arguments(description: str, argv: list[str] | None = None,
                    add_arguments: Callable[[Any], None] | None = None):
    """The common command line of every benchmark (``--out --config --quick -v`` plus its own
    options from ``add_arguments(parser)``); sets up logging and returns ``(args, config)``."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default="bench_results")
    parser.add_argument("--config", default=None, help="bench settings (default conf/bench.yaml)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run), from the quick: section")
    parser.add_argument("-v", "--verbose", action="store_true")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    return args, load_bench_config(args.config, quick=args.quick)


def simple_main(doc: str | None, run: Callable[[dict, str], Any], argv: list[str] | None = None) -> int:
    """``main()`` of a benchmark with only the common options: ``run(config, out_dir)``."""
    args, config = bench_arguments((doc or "").split("\n")[0], argv)
    run(config, args.out)
    return 0


def pipeline_settings(tables_root: Path, model_dir: Path, overrides: dict | None = None):
    """``conf/pipeline.yaml`` pointed at a bench folder (cf. ``tests.conftest.make_settings``)."""
    from pipelines.config.settings import load_settings

    base = {"tables_root": str(tables_root), "model_dir": str(model_dir), "spark_profile": "local"}
    return load_settings(repo_path("conf/pipeline.yaml"), deep_merge(base, overrides or {}))


@dataclass(frozen=True)
class TrainedLake:
    """A lake whose world is already written and whose tokenizer is trained and promoted
    (``root`` holds ``lake/`` and ``model/``), with the world config it was written from.
    A benchmark given one copies it instead of writing a world and training (the smoke tests
    hand over the test session's lake: the same steps, measured elsewhere, at ~1 CPU-min each)."""

    root: Path
    world: Any          # pipelines.world.WorldConfig

    def copy_to(self, tmp_root: Path, overrides: dict | None = None):
        """A private copy under ``tmp_root/trained``; returns its pipeline settings."""
        dest = Path(tmp_root) / "trained"
        shutil.copytree(self.root, dest, dirs_exist_ok=True)
        return pipeline_settings(dest / "lake", dest / "model", overrides)


def train_promoted(spark, settings) -> dict:
    """Train a tokenizer on every day of the bench lake (a benchmark holds nothing out) and
    promote it without gates (a benchmark measures cost, not quality); returns the summary."""
    from pipelines.tokenizer.registry import promote
    from pipelines.tokenizer.train_job import train

    trained = train(spark, settings, end_date="9999-12-31")
    promote(settings, trained["tokenizer_version"], force=True, reason="benchmark")
    return trained
