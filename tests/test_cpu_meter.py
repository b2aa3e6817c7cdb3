"""The benchmarks' process-tree CPU meter counts processes that start and exit inside the block;
the suite's per-test CPU report (tests/cpu_report.py) is built on it."""
import json
import os
import resource
import subprocess
import sys

from benchmarks.cpu_meter import TreeCpuMeter

BURN = "x = 0\nfor i in range(10**7): x += i"  # about a CPU-second each


def test_counts_children_that_exit_and_never_goes_negative():
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys\n"
                               f"for _ in range(3): subprocess.run([sys.executable, '-c', {BURN!r}])"])
    with TreeCpuMeter(root=parent.pid, interval_s=0.05) as meter:
        parent.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert meter.processes_seen >= 4  # the parent and its three children
    # the kernel's own account of the finished tree; the meter misses each process's last
    # interval (more when a loaded machine delays the sampling thread), never counts twice
    assert 0.5 * reaped <= meter.cpu_s <= reaped + 0.05


def test_an_idle_block_costs_next_to_nothing():
    with TreeCpuMeter() as meter:
        pass
    assert 0.0 <= meter.cpu_s < 0.5 and meter.wall_s >= 0.0


def test_the_per_test_report_meters_each_test_and_sums_them_per_file(tmp_path, capsys):
    """tests/cpu_report.py on a real pytest run of two small files: one JSON line per test, and the
    summary's per-file totals are the sums of those lines."""
    from tests.cpu_report import OUT_VARIABLE, main, per_file

    out = tmp_path / "cpu.jsonl"
    files = ["tests/core/test_collisions.py", "tests/core/test_code_stats.py"]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.cpu_report", "-p", "no:cacheprovider",
                          f"--basetemp={tmp_path / 'bt'}", *files],
                         env={**os.environ, OUT_VARIABLE: str(out)}, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:]
    lines = [json.loads(text) for text in out.read_text().splitlines()]
    assert {line["test"].split("::")[0] for line in lines} == set(files) and len(lines) >= 4
    assert all(line["cpu_s"] >= 0 and line["wall_s"] >= 0 for line in lines)
    totals = per_file(lines)
    assert sum(t["tests"] for t in totals.values()) == len(lines)
    assert abs(sum(t["cpu_s"] for t in totals.values()) - sum(line["cpu_s"] for line in lines)) < 1e-6
    assert main([str(out), "--top", "1"]) == 0
    header, largest = capsys.readouterr().out.splitlines()
    assert header.startswith(f"{len(lines)} tests in 2 files") and largest.split()[-1] in files
