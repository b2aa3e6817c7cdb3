"""The one place a SparkSession is built: Delta Lake from locally cached jars, a profile from
``conf/spark/<profile>.yaml``, and Python workers that run this project's interpreter.

The Delta jars are fetched once per machine by ``scripts/setup_env.py`` (``make setup``) into
``$U2QT_CACHE/jars/delta-<version>`` and passed with ``spark.jars``: nothing is resolved
through Ivy when a session starts.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pipelines.config_loading import CONF_DIR, REPO_ROOT, load_model
from u2qt_core.errors import ConfigError

log = logging.getLogger(__name__)

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


class SparkProfile(BaseModel):
    """``conf/spark/<name>.yaml``: the master URL (null = leave it to spark-submit) and conf."""

    model_config = ConfigDict(extra="forbid")
    master: str | None = None
    conf: dict[str, str] = {}


def load_profile(name: str) -> SparkProfile:
    path = CONF_DIR / "spark" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONF_DIR / "spark").glob("*.yaml"))
        raise ConfigError(f"spark_profile: unknown profile {name!r} (no {path}); known: {', '.join(known)}")
    return load_model(SparkProfile, path)


def cache_root() -> Path:
    return Path(os.environ.get("U2QT_CACHE", Path.home() / ".cache" / "u2qt")).expanduser()


def delta_jars() -> list[Path]:
    """The cached Delta jars; a clear error if the set-up has not fetched them."""
    override = os.environ.get("U2QT_DELTA_JARS_DIR")
    folders = [Path(override)] if override else sorted((cache_root() / "jars").glob("delta-*"), reverse=True)
    for folder in folders:
        if (folder / ".complete").exists():
            jars = sorted(folder.glob("*.jar"))
            if jars:
                return jars
    raise ConfigError(
        f"no Delta Lake jars in {cache_root() / 'jars'}: run `make setup` (python3 scripts/setup_env.py jars) first"
    )


def get_spark(profile: str = "local", app_name: str = "u2qt", extra_conf: dict[str, str] | None = None):
    """Return the active SparkSession or build one for ``profile`` with Delta enabled.

    ``extra_conf`` wins over the profile (tests use it to point the warehouse at a tmp dir).
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    spark_profile = load_profile(profile)
    python = sys.executable
    os.environ.setdefault("PYSPARK_PYTHON", python)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", python)
    if spark_profile.master and spark_profile.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers (also those of local-cluster executors) must import this project.
    pythonpath = os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p)
    os.environ["PYTHONPATH"] = pythonpath

    builder = SparkSession.builder.appName(app_name)
    if spark_profile.master:
        builder = builder.master(spark_profile.master)
    conf = {
        **spark_profile.conf,
        **DELTA_SQL_CONF,
        "spark.jars": ",".join(str(jar) for jar in delta_jars()),
        "spark.executorEnv.PYTHONPATH": pythonpath,
        "spark.executorEnv.PYSPARK_PYTHON": python,
        "spark.pyspark.python": python,
        **(extra_conf or {}),
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    log.info("starting Spark (profile %s, master %s)", profile, spark_profile.master or "<from spark-submit>")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
