"""Where the suite's CPU goes: an opt-in pytest plugin that meters every test, and its summary.

    U2QT_TEST_CPU=cpu.jsonl pytest -p tests.cpu_report -n 2 --dist loadfile --no-loadscope-reorder
    python -m tests.cpu_report cpu.jsonl [--top 15]

Each test (set-up, call and tear-down) runs inside :class:`benchmarks.cpu_meter.TreeCpuMeter`:
the worker process, its Spark JVM, the JVM's Python workers and every subprocess the test starts
(the CLI, spark-submit, Airflow's services and task processes). One JSON line per test is appended
to ``$U2QT_TEST_CPU``: ``test``, ``cpu_s``, ``wall_s``, ``machine_idle_s`` (the whole machine's
idle CPU-seconds meanwhile: near zero when the suite is CPU-bound, as it is on 2 cores) and
``finished_at`` (Unix time, to line the workers' tests up). Under
pytest-xdist every worker appends to the same file. The summary prints CPU-seconds per test file,
largest first, and the totals. The figures of the README's "Tests" paragraph came from it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

OUT_VARIABLE = "U2QT_TEST_CPU"
#: the seconds each line carries and the summary adds up per file
METERED = ("cpu_s", "wall_s", "machine_idle_s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Meter one test's whole protocol and append its JSON line (nothing when the variable is unset)."""
    out = os.environ.get(OUT_VARIABLE)
    if not out:
        yield
        return
    import psutil

    from benchmarks.cpu_meter import TreeCpuMeter

    idle_before = psutil.cpu_times().idle
    with TreeCpuMeter(interval_s=0.5) as meter:
        yield
    record = {"test": item.nodeid, "cpu_s": round(meter.cpu_s, 2), "wall_s": round(meter.wall_s, 2),
              "machine_idle_s": round(psutil.cpu_times().idle - idle_before, 2), "finished_at": time.time()}
    with open(out, "a") as f:                 # one short append per test: the workers' lines never interleave
        f.write(json.dumps(record) + "\n")


def per_file(lines: list[dict]) -> dict[str, dict[str, float]]:
    """``{test file: {cpu_s, wall_s, machine_idle_s, tests}}`` summed over that file's tests."""
    files: dict[str, dict[str, float]] = defaultdict(lambda: {**dict.fromkeys(METERED, 0.0), "tests": 0})
    for line in lines:
        entry = files[line["test"].split("::")[0]]
        for key in METERED:
            entry[key] += line[key]
        entry["tests"] += 1
    return dict(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help=f"the JSON lines ${OUT_VARIABLE} pointed at")
    parser.add_argument("--top", type=int, default=15, help="test files to list (largest CPU first)")
    args = parser.parse_args(argv)
    lines = [json.loads(text) for text in args.path.read_text().splitlines() if text.strip()]
    files = per_file(lines)
    total = {key: sum(f[key] for f in files.values()) for key in METERED}
    print(f"{len(lines)} tests in {len(files)} files: {total['cpu_s']:.0f} CPU-s, {total['wall_s']:.0f} test-seconds, "
          f"machine idle {total['machine_idle_s']:.0f} s meanwhile")
    for name, f in sorted(files.items(), key=lambda kv: -kv[1]["cpu_s"])[:args.top]:
        print(f"{f['cpu_s']:8.1f} CPU-s {f['wall_s']:8.1f} s {int(f['tests']):4d} tests  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
