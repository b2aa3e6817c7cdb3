"""The one place a SparkSession is built: Delta Lake from locally cached jars, a profile from
``conf/spark/<profile>.yaml`` (or a profile YAML path), and Python workers that run this
project's interpreter.

Where the master comes from, first match wins:

1. under ``spark-submit`` (``pipelines.deploy.submit``): whatever was given at submit time
   (``--master``, ``--conf``, spark-defaults); the profile only fills keys left unset;
2. the ``master`` argument (the CLI's ``--master``);
3. ``$MASTER`` or ``$SPARK_MASTER``;
4. the profile's ``master``.

Spark Connect (``sc://...``, ``$SPARK_REMOTE``) is refused with one line: the jobs use JVM-side
Delta APIs and local checkpoints that a Connect client does not have.

The Delta jars are fetched once per machine by ``scripts/setup_env.py`` (``make setup``) into
``$U2QT_CACHE/jars/delta-<version>`` and passed with ``spark.jars`` (``--jars`` under
spark-submit): nothing is resolved through Ivy when a session starts.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pipelines.config.config_loading import CONF_DIR, REPO_ROOT, load_model
from u2qt_core.errors import ConfigError

log = logging.getLogger(__name__)

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
MASTER_ENV_VARS = ("MASTER", "SPARK_MASTER")
#: the executors' Python daemon of local sessions (a profile's ``spark.python.daemon.module`` wins)
DAEMON_MODULE = "pipelines.runtime.python_daemon"


class SparkProfile(BaseModel):
    """``conf/spark/<name>.yaml``: the master URL (null = spark-submit / the environment) and conf."""

    model_config = ConfigDict(extra="forbid")
    master: str | None = None
    conf: dict[str, str] = {}


def load_profile(name: str) -> SparkProfile:
    """A profile by name (``conf/spark/<name>.yaml``) or by path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name).expanduser()
        if not path.exists():
            raise ConfigError(f"spark_profile: profile file {path} not found")
        return load_model(SparkProfile, path)
    path = CONF_DIR / "spark" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONF_DIR / "spark").glob("*.yaml"))
        raise ConfigError(f"spark_profile: unknown profile {name!r} (no {path}); known: {', '.join(known)}")
    return load_model(SparkProfile, path)


def launched_by_spark_submit() -> bool:
    """True in a Python driver that spark-submit started (its JVM and conf already exist)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def resolve_master(profile: SparkProfile, master: str | None = None) -> str | None:
    """``master`` argument > ``$MASTER`` / ``$SPARK_MASTER`` > the profile; refuses Spark Connect."""
    chosen = master or next((os.environ[v] for v in MASTER_ENV_VARS if os.environ.get(v)), None) or profile.master
    remote = os.environ.get("SPARK_REMOTE")
    if (chosen and chosen.startswith("sc://")) or remote:
        raise ConfigError(
            f"spark master {chosen if chosen and chosen.startswith('sc://') else remote}: Spark Connect is not "
            "supported by the u2qt jobs (they need JVM-side Delta APIs and local checkpoints); use local[*], "
            "spark://, yarn or k8s:// (unset SPARK_REMOTE)")
    return chosen


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


def python_executable() -> str:
    """The interpreter Python workers run: ``$PYSPARK_PYTHON`` or this one."""
    return os.environ.get("PYSPARK_PYTHON") or sys.executable


def submit_conf(profile_name: str, extra_conf: dict[str, str] | None = None) -> dict[str, str]:
    """The ``--conf`` pairs a spark-submit of a u2qt step needs: the profile's conf, Delta's SQL
    extension and catalog, and the workers' Python (``--jars`` comes from :func:`delta_jars`)."""
    python = python_executable()
    return {
        **load_profile(profile_name).conf,
        **DELTA_SQL_CONF,
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        **(extra_conf or {}),
    }


def get_spark(profile: str = "local", app_name: str = "u2qt", extra_conf: dict[str, str] | None = None,
              master: str | None = None):
    """Return the active SparkSession or build one for ``profile`` with Delta enabled.

    ``extra_conf`` wins over the profile (tests use it to point the warehouse at a tmp dir);
    ``master`` wins over ``$MASTER`` / ``$SPARK_MASTER`` and the profile (see the module doc).
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    spark_profile = load_profile(profile)
    if launched_by_spark_submit():
        return _submitted_session(spark_profile, app_name, extra_conf)
    chosen = resolve_master(spark_profile, master)
    if not chosen:
        raise ConfigError(f"spark_profile {profile}: no master: pass --master, set SPARK_MASTER, or run the step "
                          "through spark-submit (`u2qt submit-args`)")
    python = python_executable()
    os.environ.setdefault("PYSPARK_PYTHON", python)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", python)
    if chosen.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers (also those of local-cluster executors) must import this project.
    pythonpath = os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p)
    os.environ["PYTHONPATH"] = pythonpath

    builder = SparkSession.builder.appName(app_name).master(chosen)
    conf = {
        # local and local-cluster executors import this project from PYTHONPATH above, so their
        # Python daemon can preload the encoder's libraries (pipelines/runtime/python_daemon.py);
        # under spark-submit the executors get it from --py-files only after a worker started
        **({"spark.python.daemon.module": DAEMON_MODULE} if chosen.startswith("local") else {}),
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
    log.info("starting Spark (profile %s, master %s)", profile, chosen)
    return _quiet(builder.getOrCreate())


def _submitted_session(spark_profile: SparkProfile, app_name: str, extra_conf: dict[str, str] | None):
    """Under spark-submit: submit-time conf wins; the profile and Delta only fill unset keys."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    submitted = SparkConf()   # holds --master, --conf, --jars and spark-defaults.conf
    if not any("delta" in jar for jar in submitted.get("spark.jars", "").split(",")):
        log.warning("spark-submit without the Delta jars in --jars: Delta tables will fail to load "
                    "(see `u2qt submit-args`)")
    builder = SparkSession.builder.appName(submitted.get("spark.app.name", app_name))
    for key, value in {**spark_profile.conf, **DELTA_SQL_CONF, **(extra_conf or {})}.items():
        if not submitted.contains(key) or key in (extra_conf or {}):
            builder = builder.config(key, value)
    log.info("Spark from spark-submit (master %s)", submitted.get("spark.master", "?"))
    return _quiet(builder.getOrCreate())


def _quiet(spark):
    """WARN log level on a classic session (a Connect session has no sparkContext)."""
    if not type(spark).__module__.startswith("pyspark.sql.connect"):
        spark.sparkContext.setLogLevel("WARN")
    return spark
