"""``u2qt maintain``: the Delta upkeep the nightly job leaves for later (``u2qt_maintenance`` DAG).

1. compact the history (:func:`pipelines.lake.history.compact_history`): closed periods of
   ``user_day_tokens`` into ``user_token_history_base``, expired periods dropped;
2. per table: log retention (``delta.logRetentionDuration``, ``delta.deletedFileRetentionDuration``),
   ``OPTIMIZE`` (``ZORDER BY (user_id)`` for the tables read or merged by user: the history base,
   ``user_tokens`` and ``user_profile``; plain compaction of small files for the date-partitioned
   ones), then ``VACUUM`` of the files replaced more than ``maintenance.vacuum_retain_hours`` ago.

Not meant to run while a night publishes (the DAG runs in its own slot): OPTIMIZE commits can
conflict with a concurrent MERGE, and a compaction must not race a re-published date.
Cost: OPTIMIZE rewrites only files that are small or not yet clustered (Z-order rewrites a
partition's files whole, so the history base pays it once per period); VACUUM lists the table.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from pyspark.sql import SparkSession

from pipelines.config.settings import PipelineSettings
from pipelines.lake import tables
from pipelines.lake.history import compact_history
from pipelines.lake.lake import Lake

log = logging.getLogger(__name__)

DEFAULT_RETENTION_CHECK_HOURS = 168.0  # Delta refuses VACUUM below this unless the check is off


def _live_files(path: str) -> int | None:
    folder = Path(path)
    return sum(1 for _ in folder.rglob("*.parquet")) if folder.is_dir() else None


def _set_retention(spark: SparkSession, path: str, settings: PipelineSettings) -> None:
    m = settings.maintenance
    wanted = {"delta.logRetentionDuration": f"interval {m.log_retention_days} days",
              "delta.deletedFileRetentionDuration": f"interval {int(m.vacuum_retain_hours)} hours"}
    current = tables.table_properties(spark, path)
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    if changed:   # only when different: an unchanged table gets no new commit
        props = ", ".join(f"'{k}' = '{v}'" for k, v in changed.items())
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({props})")


def maintain_table(lake: Lake, name: str, zorder: bool) -> dict:
    """Retention properties, OPTIMIZE (Z-ordered by user_id when ``zorder``) and VACUUM of one table."""
    spark, settings, path = lake.spark, lake.settings, lake.path(name)
    started = time.monotonic()
    files_before = _live_files(path)
    _set_retention(spark, path, settings)
    optimized = spark.sql(f"OPTIMIZE delta.`{path}`" + (" ZORDER BY (user_id)" if zorder else "")).first()
    metrics = optimized["metrics"].asDict() if optimized and optimized["metrics"] is not None else {}
    hours = settings.maintenance.vacuum_retain_hours
    spark.sql(f"VACUUM delta.`{path}` RETAIN {hours} HOURS")
    out = {
        "zorder": zorder,
        "files_added": metrics.get("numFilesAdded"), "files_removed": metrics.get("numFilesRemoved"),
        "parquet_files_before": files_before, "parquet_files_after": _live_files(path),
        "seconds": round(time.monotonic() - started, 2),
    }
    log.info("maintain %s: %s", name, out)
    return out


def maintained_tables() -> list[tuple[str, bool]]:
    """``[(table, zorder)]``: what the catalogue marks for maintenance, the Z-ordered ones first."""
    return [(spec.name, spec.maintenance == "zorder") for kind in ("zorder", "optimize")
            for spec in tables.TABLES.values() if spec.maintenance == kind]


def maintain(lake: Lake) -> dict:
    """Compact the history, then OPTIMIZE / VACUUM every table the catalogue marks for maintenance
    that exists (the code tables of ``lake``'s generation: the current one, :meth:`Lake.open`)."""
    spark, m = lake.spark, lake.settings.maintenance
    started = time.monotonic()
    report: dict = {"history": compact_history(lake), "tables": {}}
    check_key = "spark.databricks.delta.retentionDurationCheck.enabled"
    previous = spark.conf.get(check_key, "true")
    if m.vacuum_retain_hours < DEFAULT_RETENTION_CHECK_HOURS:
        log.warning("maintenance.vacuum_retain_hours = %s < %s: readers of snapshots older than that may fail",
                    m.vacuum_retain_hours, DEFAULT_RETENTION_CHECK_HOURS)
        spark.conf.set(check_key, "false")
    try:
        for name, zorder in maintained_tables():
            if lake.exists(name):
                report["tables"][name] = maintain_table(lake, name, zorder)
    finally:
        spark.conf.set(check_key, previous)
    report["seconds"] = round(time.monotonic() - started, 2)
    return report
