"""The benchmarks' process-tree CPU meter counts processes that start and exit inside the block."""
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
