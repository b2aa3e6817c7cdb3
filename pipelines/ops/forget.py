"""``u2qt forget``: erase users from every table of a table generation.

The users' rows are deleted from every Delta table the catalogue in :mod:`pipelines.lake.tables`
lists and from any other Delta table found directly under ``tables_root`` (so tables added later,
e.g. a history redesign's, are covered without a change here): by ``user_id`` where a table has
that column, by the ``user_id`` inside ``row_json`` for ``quarantine``. ``user_tokens`` loses the
users and re-ranks the groups they leave in the same commit. Tables with deletion vectors are then
purged (``REORG TABLE ... APPLY (PURGE)``) so no current data file still holds the rows.

Old table versions still do until they are vacuumed: ``VACUUM`` with a retention (default 7 days)
deletes the files no current version references; ``vacuum_retain_hours`` runs it right away.
The whole erasure runs under the publish lock, so no night publishes in between.

Cost: one MERGE per table, whose read is the table (erasure is rare and off the nightly path);
the rewrite follows the files that hold the users' rows.
"""
from __future__ import annotations

import logging
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType
from tqdm import tqdm

from pipelines.lake import tables
from pipelines.lake.concurrency import publish_lock, retry_on_conflict
from pipelines.lake.lake import Lake
from pipelines.runtime.local_rows import rows_frame
from pipelines.night.identities import forget_identities
from pipelines.config.settings import PipelineSettings
from u2qt_core.errors import InputError

log = logging.getLogger(__name__)


def read_user_ids(path: str | Path) -> list[int]:
    """One integer user id per line (blank lines and ``#`` comments skipped); a bad line raises
    :class:`InputError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: user-id file not found")
    ids: list[int] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            ids.append(int(text))
        except ValueError:
            raise InputError(f"{path}:{number}: expected one integer user_id per line, got {text!r}") from None
    if not ids:
        raise InputError(f"{path}: no user ids in the file")
    return sorted(set(ids))


def erasure_targets(spark: SparkSession, settings: PipelineSettings) -> dict[str, str]:
    """``{table name: path}`` of every existing Delta table to erase from: the catalogue's, plus any
    other Delta table directly under ``tables_root``, plus every table generation's code tables
    (``<generation>/<table>``, :mod:`pipelines.lake.lake`)."""
    lake = Lake(spark, settings)      # the first generation's folders and every later one's
    found = {spec.name: lake.path(spec.name) for spec in tables.ALL_TABLES}
    if lake.root.is_dir():
        for child in sorted(lake.root.iterdir()):
            if child.is_dir() and (child / "_delta_log").is_dir():
                found.setdefault(child.name, str(child))
    for generation in lake.generation_folders():
        for child in sorted(generation.iterdir()):
            if child.is_dir() and (child / "_delta_log").is_dir():
                found[f"{generation.name}/{child.name}"] = str(child)
    return {name: path for name, path in found.items() if tables.table_exists(spark, path)}


def _match_condition(frame: DataFrame) -> str | None:
    if "user_id" in frame.columns:
        return "t.user_id = s.user_id"
    if "row_json" in frame.columns:   # quarantine: the original row, user_id inside the JSON
        return "CAST(get_json_object(t.row_json, '$.user_id') AS BIGINT) = s.user_id"
    return None


def _delete_users(spark: SparkSession, path: str, ids: DataFrame, condition: str) -> int:
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, path)
    table.alias("t").merge(ids.alias("s"), condition).whenMatchedDelete().execute()
    last = table.history(1).first()
    return int((last["operationMetrics"] or {}).get("numTargetRowsDeleted", 0)) if last["operation"] == "MERGE" else 0


def forget_users(spark: SparkSession, settings: PipelineSettings, user_ids: list[int],
                 vacuum_retain_hours: float | None = None) -> dict[str, int]:
    """Delete ``user_ids`` from every table (see the module docstring); returns rows deleted per
    table (``user_tokens``: rows written, deletions plus re-ranked suffixes)."""
    limits = settings.concurrency
    ids = rows_frame(spark, [(int(u),) for u in user_ids], StructType.fromDDL("user_id bigint")).localCheckpoint(eager=True)
    targets = erasure_targets(spark, settings)
    deleted: dict[str, int] = {}
    with publish_lock(settings.tables_root, limits.lock_timeout_s):
        for name, path in tqdm(targets.items(), desc="forget", unit="table"):
            def erase(name=name, path=path) -> int | None:
                if name.rsplit("/", 1)[-1] == tables.USER_TOKENS.name:
                    return forget_identities(spark, path, ids)
                condition = _match_condition(spark.read.format("delta").load(path))
                return None if condition is None else _delete_users(spark, path, ids, condition)

            count = retry_on_conflict(erase, f"forget in {name}", limits.conflict_retries, limits.retry_base_s)
            if count is None:
                log.info("forget: %s has no user_id: nothing to erase", name)
                continue
            deleted[name] = count
            if tables.table_properties(spark, path).get("delta.enableDeletionVectors") == "true":
                retry_on_conflict(lambda path=path: spark.sql(f"REORG TABLE delta.`{path}` APPLY (PURGE)").collect(),
                                  f"purge {name}", limits.conflict_retries, limits.retry_base_s)
        if vacuum_retain_hours is not None:
            vacuum(spark, list(targets.values()), vacuum_retain_hours)
    log.info("forget: %d users erased: %s", len(user_ids), deleted)
    return deleted


def vacuum(spark: SparkSession, paths: list[str], retain_hours: float) -> None:
    """``VACUUM ... RETAIN n HOURS`` on ``paths``: files of older versions go, and with them time
    travel to before the erasure. Below Delta's 168-hour safety check this is deliberate, so the
    check is lifted for the call (a concurrent reader of an old version would lose its files)."""
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    before = spark.conf.get(check, "true")
    spark.conf.set(check, "false" if retain_hours < 168 else before)
    try:
        for path in paths:
            spark.sql(f"VACUUM delta.`{path}` RETAIN {float(retain_hours):g} HOURS").collect()
    finally:
        spark.conf.set(check, before)


def user_ids_present(spark: SparkSession, frame: DataFrame, user_ids: list[int]) -> int:
    """Rows of ``frame`` that still name one of ``user_ids`` (by column or inside ``row_json``)."""
    if "user_id" in frame.columns:
        column = F.col("user_id")
    elif "row_json" in frame.columns:
        column = F.get_json_object("row_json", "$.user_id").cast("bigint")
    else:
        return 0
    return frame.where(column.isin(list(user_ids))).count()
