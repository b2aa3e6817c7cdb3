"""Progress of long Spark work: the task counts come from Spark's own status tracker."""
from __future__ import annotations

import logging
import time

from pipelines.runtime.progress import _tasks, spark_progress


def test_progress_counts_the_tasks_of_the_blocks_jobs_and_logs_off_a_terminal(spark, caplog):
    with caplog.at_level(logging.INFO, logger="pipelines.runtime.progress"):
        with spark_progress(spark, "count a range", poll_s=0.05, log_every_s=0.0):
            assert spark.range(0, 1000, numPartitions=3).rdd.map(lambda x: x).count() == 1000
            group = spark.sparkContext.getLocalProperty("spark.jobGroup.id")
            time.sleep(0.5)          # polls after the job: stderr is no terminal here, so they log
    assert _tasks(spark, group) == (3, 3)
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None      # later jobs are not tagged
    assert any(r.getMessage().startswith("count a range: 3 of 3 Spark tasks done") for r in caplog.records)
