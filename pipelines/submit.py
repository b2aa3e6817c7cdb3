"""spark-submit entry point: one u2qt step per submitted application.

    spark-submit [--master spark://host:7077] --jars <delta jars> --py-files u2qt-<version>.zip \\
        --conf spark.sql.extensions=... <this file> STEP [DATE ...] --config CONFIG [--set key=value]

(``u2qt submit-args STEP DATE`` prints the whole command line for this machine; installed, the
same main is the ``u2qt-submit`` console script and ``python -m pipelines.submit``.)

Steps: ``init [DATE]`` (create missing output tables before dates run side by side),
``stage DATE``, ``quality DATE``, ``publish DATE`` (the three of one night, each idempotent), ``features DATE`` (``user_features``
as of the date, after publish), ``train-sequence DATE`` (the sequence encoder on histories up to the date),
``train [START END]``, ``maintain``, ``backfill START END``, ``catalog`` (register
the tables and views in the persistent catalog). The session is built from the submit-time
configuration (:func:`pipelines.spark_session.get_spark`). Exit codes: 0 done, 2 a deliberate
error (bad config, missing table ... one line on stderr), 3 a failed quality gate (the DAG fails
such a task at once, without retries).
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import shlex
import sys
import tempfile
import zipfile
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):   # run as a file by spark-submit: `pipelines` comes from --py-files
    sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]

log = logging.getLogger("u2qt.submit")

STEPS = ("init", "stage", "quality", "publish", "features", "train-sequence", "train", "maintain", "backfill", "catalog")
EXIT_ERROR = 2
EXIT_QUALITY_GATE = 3

# Hooks for steps whose implementation lives in other modules: "module:function". The function
# takes (spark, settings, dates) and returns a JSON-able dict. A missing module falls back as noted.
BACKFILL_HOOK = "pipelines.backfill:backfill"         # (spark, settings, [D1..Dn]) -> dict; else run_day per date


def date_range(start: str, end: str) -> list[str]:
    """Every ISO date from ``start`` to ``end`` inclusive; a ValueError naming them when reversed."""
    from pipelines.day_run import iso_date

    first, last = iso_date(start, "start date"), iso_date(end, "end date")
    if last < first:
        raise ValueError(f"end date {end} is before start date {start}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _hook(spec: str):
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _day_run(spark, settings, event_date: str, run_id: str | None):
    from pipelines.day_run import open_run

    return open_run(spark, settings, event_date, run_id)   # the version the run's first step resolved


def run_step(spark, settings, step: str, dates: list[str], run_id: str | None = None) -> dict:
    """Run one step; ``dates`` is [D] for the nightly steps, [START, END] for train/backfill."""
    from dataclasses import asdict

    if step == "init":
        from pipelines.day_run import load_tokenizer_info
        from pipelines.generations import generation_for, with_generation
        from pipelines.tables import ensure_all

        version = load_tokenizer_info(settings).version   # the alias now; the first dated step records its own
        target = with_generation(settings, generation_for(spark, settings, version))
        return {"tables": ensure_all(spark, target, version)}
    if step in ("stage", "quality", "publish", "features", "train-sequence"):
        if len(dates) != 1:
            raise ValueError(f"step {step} takes exactly one date, got {dates}")
        run = _day_run(spark, settings, dates[0], run_id)
        if step == "stage":
            from pipelines.stage import stage

            return asdict(stage(run))
        if step == "quality":
            from pipelines.quality import check_quality

            return check_quality(run)
        if step == "features":
            from pipelines.features import build_features

            return build_features(run)
        if step == "train-sequence":
            from pipelines.sequence_encoder import train_sequence_encoder

            return train_sequence_encoder(run)
        from pipelines.daily_job import publish

        return publish(run)
    if step == "train":
        from pipelines.train_job import train

        start, end = (dates + [None, None])[:2]
        summary = train(spark, settings, start_date=start, end_date=end)
        return {k: v for k, v in summary.items() if k != "metrics"}
    if step == "backfill":
        if len(dates) != 2:
            raise ValueError(f"step backfill takes START END, got {dates}")
        days = date_range(*dates)
        one_job = _hook(BACKFILL_HOOK)
        if one_job is not None:
            return one_job(spark, settings, days)
        from pipelines.daily_job import run_day

        return {day: run_day(spark, settings, day) for day in days}
    if step == "maintain":
        from pipelines.maintenance import maintain

        return maintain(spark, settings)
    if step == "catalog":
        from pipelines.catalog import register_catalog

        return {"registered": register_catalog(spark, settings)}
    raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="u2qt-submit", description="Run one u2qt step (spark-submit entry point).")
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("dates", nargs="*", help="DATE for stage/quality/publish; START END for backfill/train")
    parser.add_argument("--config", help="pipeline YAML path or http(s):// / file:// URL (default: the packaged conf)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value (repeatable)")
    parser.add_argument("--run-id", help="run id recorded in run_metrics (Airflow passes its own)")
    parser.add_argument("--master", help="Spark master when not launched by spark-submit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Parse, build the session, run the step, print its metrics as JSON; exit 2 / 3 on failure."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    from pipelines.quality import QualityGateFailed
    from pipelines.settings import load_settings
    from u2qt_core.config_loader import parse_overrides
    from pipelines.spark_session import get_spark
    from u2qt_core.errors import U2QTError

    try:
        from pipelines.day_run import iso_date

        for value in args.dates:      # before Spark starts
            iso_date(value)
        settings = load_settings(args.config, parse_overrides(args.overrides))
        extra = None
        if args.step == "catalog":
            from pipelines.catalog import catalog_session_conf

            extra = catalog_session_conf(settings)
        spark = get_spark(settings.spark_profile, app_name=f"u2qt_{args.step}", extra_conf=extra, master=args.master)
        result = run_step(spark, settings, args.step, args.dates, args.run_id)
    except QualityGateFailed as exc:
        log.error("quality gate failed: %s", exc)
        sys.exit(EXIT_QUALITY_GATE)
    except (U2QTError, ValueError) as exc:
        log.error("%s", exc)
        sys.exit(EXIT_ERROR)
    print(json.dumps(result, indent=2, default=str))


# ---- building the spark-submit command line ----------------------------------------------------

def package_sources() -> dict[str, Path]:
    """Folder of each top-level package the executors need, as it will be named in the zip."""
    import pipelines
    import u2qt_core
    from pipelines.config_loading import CONF_DIR

    return {"pipelines": Path(pipelines.__file__).parent, "u2qt_core": Path(u2qt_core.__file__).parent,
            "u2qt_conf": CONF_DIR}


def build_py_files_zip(out_dir: str | Path | None = None) -> Path:
    """``u2qt-<version>.zip`` with ``pipelines/``, ``u2qt_core/`` and the default conf as ``u2qt_conf/``
    (what ``--py-files`` ships to the driver and executors); rebuilt on every call (a second)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tag = version("u2qt")
    except PackageNotFoundError:
        tag = "checkout"
    out = Path(out_dir or Path(tempfile.gettempdir()) / "u2qt-dist").expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"u2qt-{tag}.zip"
    staging = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, folder in package_sources().items():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".yaml"):
                    zf.write(path, f"{name}/{path.relative_to(folder)}")
    staging.replace(target)
    return target


def submit_command(step: str, dates: list[str], *, config: str | None, profile: str, master: str | None,
                   py_files: Path, run_id: str | None = None, extra_conf: dict[str, str] | None = None,
                   overrides: list[str] | None = None) -> list[str]:
    """The full ``spark-submit`` argv for one step on this machine (master: the argument, else
    ``$MASTER`` / ``$SPARK_MASTER``, else the profile's; none means spark-defaults decides)."""
    from pipelines.spark_session import delta_jars, load_profile, resolve_master, submit_conf
    from pyspark.find_spark_home import _find_spark_home

    chosen = resolve_master(load_profile(profile), master)
    argv = [str(Path(_find_spark_home()) / "bin" / "spark-submit"), "--name", f"u2qt_{step}"]
    if chosen:
        argv += ["--master", chosen]
    argv += ["--jars", ",".join(str(j) for j in delta_jars()), "--py-files", str(py_files)]
    for key, value in submit_conf(profile, extra_conf).items():
        argv += ["--conf", f"{key}={value}"]
    argv += [str(submit_entry_point()), step, *dates]
    if config:
        argv += ["--config", str(config)]
    for pair in overrides or []:
        argv += ["--set", pair]
    if run_id:
        argv += ["--run-id", run_id]
    return argv


def submit_entry_point() -> Path:
    """This file: the application spark-submit runs (``u2qt submit-args``, the DAGs' operators)."""
    return Path(__file__).resolve()


def format_command(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


if __name__ == "__main__":
    main()
