"""Progress of long Spark work: a bar over the tasks of the jobs a block starts.

The driver's thread that runs the block tags its jobs with a job group; a daemon thread polls
Spark's status tracker every ``poll_s`` seconds and shows the group's completed / total tasks as a
tqdm bar on a terminal, or as a log line every ``log_every_s`` seconds elsewhere (an Airflow task
log, spark-submit's driver log). Polling reads driver memory only: no Spark job, no cost that
grows with the data.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import uuid
from typing import Iterator

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def _tasks(spark: SparkSession, group: str) -> tuple[int, int]:
    """(completed, total) tasks of the stages of ``group``'s jobs so far."""
    tracker = spark.sparkContext.statusTracker()
    done = total = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in (job.stageIds if job else []):
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                done, total = done + stage.numCompletedTasks, total + stage.numTasks
    return done, total


@contextlib.contextmanager
def spark_progress(spark: SparkSession, what: str, poll_s: float = 2.0, log_every_s: float = 60.0) -> Iterator[None]:
    """Show the progress of the Spark jobs started inside the block (by this thread) as ``what``."""
    from tqdm import tqdm

    context = spark.sparkContext
    group = f"u2qt-{uuid.uuid4().hex[:8]}"
    context.setJobGroup(group, what)
    stop = threading.Event()
    bar = tqdm(desc=what, unit="task", total=0, disable=not sys.stderr.isatty(), leave=False)

    def poll() -> None:
        last_log = started = time.monotonic()
        while not stop.wait(poll_s):
            done, total = _tasks(spark, group)
            bar.total, bar.n = total, done
            bar.refresh()
            if bar.disable and time.monotonic() - last_log >= log_every_s:
                last_log = time.monotonic()
                log.info("%s: %d of %d Spark tasks done (%.0f s)", what, done, total, last_log - started)

    thread = threading.Thread(target=poll, name=f"progress {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()
        context.setLocalProperty("spark.jobGroup.id", None)
        context.setLocalProperty("spark.job.description", None)
