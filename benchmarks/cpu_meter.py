"""CPU-seconds of a process tree over a block of code: the one CPU meter of the benchmarks.

    with TreeCpuMeter() as m:          # this process, its Spark JVM and the JVM's Python workers
        run_the_night()
    m.cpu_s, m.wall_s

    proc = subprocess.Popen([...])
    with TreeCpuMeter(root=proc.pid) as m:   # a child command and everything it starts
        proc.wait()

Why sampling: reading ``utime + stime + cutime + cstime`` of the live tree once before and once
after a block goes wrong both ways. A Python worker that exits and is reaped by a parent outside
the tree, or re-parented to init, takes its CPU with it, so the second reading can be *smaller*
than the first (a negative CPU figure failed CI once); and ``RUSAGE_CHILDREN`` of a child command
misses its JVM, which py4j never waits for. So a thread samples the tree every ``interval_s`` and
keeps, per process, the last ``utime + stime`` seen (its own time only, never its children's, so
nothing is counted twice). A process counts from its first sample, minus its time at ``__enter__``
if it was alive then. The figure never decreases; it misses at most ``interval_s`` of CPU per
process that exits inside the block (Spark reuses its Python workers, so there are few).
"""
from __future__ import annotations

import os
import threading
import time

import psutil


class TreeCpuMeter:
    """Wall and CPU seconds of ``root`` (default: this process) and all its descendants.

    Args:
        root: pid of the tree's root; its descendants are re-listed at every sample.
        interval_s: seconds between samples (each costs ~1-3 ms of this process's CPU).
    """

    def __init__(self, root: int | None = None, *, interval_s: float = 0.25) -> None:
        self.root = root or os.getpid()
        self.interval_s = interval_s
        self._base: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def _sample(self) -> dict[tuple[int, float], float]:
        """Own user + system seconds of every live process in the tree, keyed by (pid, start
        time) so that a reused pid is a new process."""
        try:
            top = psutil.Process(self.root)
            procs = [top, *top.children(recursive=True)]
        except psutil.Error:  # the root has exited
            return {}
        out: dict[tuple[int, float], float] = {}
        for proc in procs:
            try:
                times = proc.cpu_times()
                out[(proc.pid, proc.create_time())] = times.user + times.system
            except psutil.Error:  # exited between listing and reading
                continue
        return out

    def _record(self) -> None:
        for key, seconds in self._sample().items():
            self._last[key] = max(seconds, self._last.get(key, 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._record()

    def __enter__(self) -> "TreeCpuMeter":
        self._base = self._sample()
        self._last = dict(self._base)
        self._wall0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="tree-cpu-meter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._record()
        self.wall_s = time.perf_counter() - self._wall0
        self.cpu_s = sum(last - self._base.get(key, 0.0) for key, last in self._last.items())

    @property
    def processes_seen(self) -> int:
        """How many distinct processes the tree had over the block."""
        return len(self._last)

    def result(self) -> dict[str, float]:
        """``{"wall_s", "cpu_s"}`` rounded to milliseconds, for the JSON results."""
        return {"wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3)}
