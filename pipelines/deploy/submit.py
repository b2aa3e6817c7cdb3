"""spark-submit entry point: one u2qt step per submitted application.

    spark-submit [--master spark://host:7077] --jars <delta jars> --py-files u2qt-<version>.zip \\
        --conf spark.sql.extensions=... <this file> STEP [DATE ...] --config CONFIG [--set key=value] [--arg key=value]

(``u2qt submit-args STEP DATE`` prints the whole command line for this machine; installed, the
same main is the ``u2qt-submit`` console script and ``python -m pipelines.deploy.submit``.)

The steps, their dates and arguments are those of the registry, :mod:`pipelines.steps`
(``u2qt step --list``). The session is built from the submit-time configuration
(:func:`pipelines.runtime.spark_session.get_spark`). Exit codes (:mod:`pipelines.errors`): 0 done,
2 a deliberate error (bad config, missing table ... one line on stderr), 3 a failed gate (the DAG
fails such a task at once, without retries).
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import zipfile
from pathlib import Path

if __package__ in (None, ""):   # run as a file by spark-submit: `pipelines` comes from --py-files
    sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]

log = logging.getLogger("u2qt.submit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from pipelines.steps import STEPS

    parser = argparse.ArgumentParser(prog="u2qt-submit", description="Run one u2qt step (spark-submit entry point).")
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("dates", nargs="*", help="DATE for stage/quality/publish; START [END] for backfill/features/train")
    parser.add_argument("--config", help="pipeline YAML path or http(s):// / file:// URL (default: the packaged conf)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value (repeatable)")
    parser.add_argument("--arg", dest="step_args", action="append", default=[], help="the step's key=value argument (repeatable)")
    parser.add_argument("--run-id", help="run id recorded in run_metrics (Airflow passes its own)")
    parser.add_argument("--master", help="Spark master when not launched by spark-submit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Parse, check, run the step (:func:`pipelines.steps.launch`), print its result as JSON; a
    deliberate error exits with its code from :func:`pipelines.errors.exit_code` (2, or 3 for a gate)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    from pipelines import steps
    from pipelines.config.settings import load_settings
    from pipelines.errors import exit_code
    from u2qt_core.config_loader import parse_overrides

    try:
        settings = load_settings(args.config, parse_overrides(args.overrides))
        result = steps.launch(args.step, settings, args.dates, args.run_id, steps.parse_args(args.step_args),
                              master=args.master)
    except Exception as exc:  # noqa: BLE001 - a deliberate error leaves with its code, a bug re-raises
        code = exit_code(exc)
        if code is None:
            raise
        log.error("%s", exc)
        sys.exit(code)
    print(json.dumps(result, indent=2, default=str))


# ---- building the spark-submit command line ----------------------------------------------------

def package_sources() -> dict[str, Path]:
    """Folder of each top-level package the executors need, as it will be named in the zip."""
    import pipelines
    import u2qt_core
    from pipelines.config.config_loading import CONF_DIR

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
                   overrides: list[str] | None = None, step_args: list[str] | None = None) -> list[str]:
    """The full ``spark-submit`` argv for one step on this machine (master: the argument, else
    ``$MASTER`` / ``$SPARK_MASTER``, else the profile's; none means spark-defaults decides)."""
    from pipelines.runtime.spark_session import delta_jars, load_profile, resolve_master, submit_conf
    from pyspark.find_spark_home import _find_spark_home

    chosen = resolve_master(load_profile(profile), master)
    argv = [str(Path(_find_spark_home()) / "bin" / "spark-submit"), "--name", f"u2qt_{step.replace('-', '_')}"]
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
    for pair in step_args or []:
        argv += ["--arg", pair]
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
