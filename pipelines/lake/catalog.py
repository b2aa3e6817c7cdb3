"""The persistent catalog analysts query: every u2qt Delta table registered (by location) under
the ``catalog.database`` schema (default ``u2qt``), and the analyst views of
:func:`pipelines.lake.views.view_definitions` created as permanent views over them.

The history view ``user_token_history`` is registered the same way, from the one SELECT of
:func:`pipelines.lake.history.history_select` (its ``history.max_days`` is fixed at registration: run
``u2qt catalog`` again after changing it).

``catalog.metastore``:

* ``embedded`` (default): a Hive metastore in embedded Derby under ``<tables_root>/_catalog``
  (pyspark ships the Hive 2.3 client and Derby). :func:`write_properties_file` leaves
  ``<tables_root>/_catalog/spark.conf`` there, so ``spark-sql --properties-file ...`` or
  ``pyspark --properties-file ...`` sees the tables and views with nothing else set. Embedded
  Derby admits one JVM at a time: the nightly steps never open it (they use path-based tables),
  only the ``catalog`` step (seconds) and analysts do; a shared deployment uses ``external``.
* ``external``: whatever catalog the session is configured with (``hive.metastore.uris`` of a
  Hive metastore service, Unity Catalog ...), set in the Spark profile or spark-defaults.

This module only registers; the view SQL belongs to pipelines/lake/tables.py and pipelines/lake/history.py.
"""
from __future__ import annotations

import logging
from pathlib import Path

from pyspark.sql import SparkSession

from pipelines.config.settings import PipelineSettings
from pipelines.lake import tables, views
from pipelines.lake.lake import Lake
from u2qt_core.token_strings import TokenFormat

log = logging.getLogger(__name__)

CATALOG_FOLDER = "_catalog"


def catalog_dir(settings: PipelineSettings) -> Path:
    return Path(settings.tables_root).expanduser().absolute() / CATALOG_FOLDER


def catalog_session_conf(settings: PipelineSettings) -> dict[str, str]:
    """Session conf of the configured metastore (static: it must be set before the session starts)."""
    if settings.catalog.metastore == "external":
        return {"spark.sql.catalogImplementation": "hive"}
    root = catalog_dir(settings)
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true",
        "spark.sql.warehouse.dir": str(root / "warehouse"),
    }


def _location(spark: SparkSession, name: str) -> str:
    location = spark.sql(f"DESCRIBE DETAIL {name}").first()["location"]
    return location.removeprefix("file:").rstrip("/")


def register_catalog(lake: Lake, token_format: TokenFormat | None) -> list[str]:
    """Create the schema, register each existing table of ``lake`` (the current table generation:
    :func:`pipelines.night.day_run.analyst_lake`) by location (re-pointed if it moved, e.g. after
    `u2qt retokenize`) and (re)create the permanent views; returns the qualified names registered.
    Idempotent."""
    from pipelines.runtime.spark_session import delta_jars

    spark, settings = lake.spark, lake.settings
    database = settings.catalog.database
    if spark.conf.get("spark.sql.catalogImplementation", "in-memory") != "hive":
        log.warning("catalog: this session's catalog is in-memory: the registration lasts as long as the session")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database} COMMENT 'u2qt token tables (Delta, by location)'")
    registered = []
    for spec in tables.ALL_TABLES:
        path = lake.path(spec.name)
        if not tables.table_exists(spark, path):
            continue
        name = f"{database}.{spec.name}"
        if spark.catalog.tableExists(name) and _location(spark, name) != path.rstrip("/"):
            log.info("catalog: %s moved to %s: re-registering (external table: no data is dropped)", name, path)
            spark.sql(f"DROP TABLE {name}")
        spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{path}'")
        registered.append(name)
    if f"{database}.{tables.USER_DAY_TOKENS.name}" in registered:
        registered.append(_register_history_view(lake, registered))
    for view, (source_table, select) in views.view_definitions(token_format, table=lambda n: f"{database}.{n}").items():
        if f"{database}.{source_table}" in registered:
            spark.sql(f"CREATE OR REPLACE VIEW {database}.{view} AS {select}")
            registered.append(f"{database}.{view}")
    if settings.catalog.metastore == "embedded":
        write_properties_file(settings, [str(j) for j in delta_jars()])
    log.info("catalog: %d tables and views under %s", len(registered), database)
    return registered


def _register_history_view(lake: Lake, registered: list[str]) -> str:
    """``user_token_history`` as a permanent view (:func:`pipelines.lake.history.history_select`): its
    compacted base and control table are created empty if ``u2qt maintain`` has not run yet, so
    the view already reads them; its cutoff follows the newest date at query time."""
    from pipelines.lake.history import history_select

    spark, settings = lake.spark, lake.settings
    database = settings.catalog.database
    for spec in (tables.HISTORY_BASE, tables.HISTORY_PERIODS):
        name = f"{database}.{spec.name}"
        if name not in registered:
            path = lake.ensure(spec)
            spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{path}'")
            registered.append(name)
    view = f"{database}.{tables.USER_TOKEN_HISTORY.name}"
    select = history_select(settings.history.max_days, lambda n: f"{database}.{n}")
    spark.sql(f"CREATE OR REPLACE VIEW {view} COMMENT 'history.max_days = {settings.history.max_days}' AS {select}")
    return view


def write_properties_file(settings: PipelineSettings, jars: list[str]) -> Path:
    """``<tables_root>/_catalog/spark.conf``: the Delta settings and this metastore, for
    ``spark-sql`` / ``pyspark`` ``--properties-file`` and notebooks."""
    from pipelines.runtime.spark_session import DELTA_SQL_CONF

    conf = {"spark.jars": ",".join(jars), **DELTA_SQL_CONF, **catalog_session_conf(settings)}
    path = catalog_dir(settings) / "spark.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `u2qt catalog`: spark-sql --properties-file " + str(path) + "\n"
                    + "".join(f"{key} {value}\n" for key, value in conf.items()))
    return path
