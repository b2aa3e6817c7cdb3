"""``u2qt``: the command line of the pipeline.

Every command takes ``--config`` (default ``conf/pipeline.yaml``) and repeatable
``--set key.path=value`` overrides, e.g. ``--set quality.max_collision_rate=0.2``.

Errors leave through one place, :func:`run`: a deliberate error (``U2QTError``: config file and
key, date, row, tokenizer version...) or a usage error (a bad option or argument) is ONE line on
stderr, ``u2qt: error: ...``, and exit code 2; no traceback. Dates and configs are checked before
Spark starts.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli import lifecycle as cli_lifecycle
from pipelines.cli import reports as cli_reports
from pipelines.cli.options import (MASTER, ArgOption, ConfigOption, SetOption, date_arg, date_range, launch_step,
                                   settings_from, spark_for)
from pipelines.config.settings import PipelineSettings
from pipelines.errors import EXIT_ERROR, exit_code
from u2qt_core.errors import U2QTError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0], rich_markup_mode="markdown")
log = logging.getLogger("u2qt")

def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("py4j", "urllib3", "filelock", "httpx", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
         master: Annotated[Optional[str], typer.Option(help="Spark master (wins over $MASTER/$SPARK_MASTER and the profile)")] = None) -> None:
    _setup_logging(verbose)
    MASTER["master"] = master


@app.command()
def world(world_config: Annotated[Path, typer.Argument(help="world YAML, e.g. conf/world/demo.yaml")],
          config: ConfigOption = None, set_: SetOption = None) -> None:
    """Write a synthetic world (raw_events, user_profile, labels, rec log) as Delta tables."""
    from pipelines.world import load_world_config, write_world

    settings = settings_from(config, set_)
    world_cfg = load_world_config(world_config)     # a bad world config fails before Spark starts
    summary = write_world(spark_for(settings, "u2qt_world"), world_cfg, settings.tables_root)
    typer.echo(json.dumps(_jsonable(summary), indent=2, default=str))


@app.command()
def train(config: ConfigOption = None, set_: SetOption = None,
          start_date: Annotated[Optional[str], typer.Option(help="first day sampled", callback=date_arg)] = None,
          end_date: Annotated[Optional[str], typer.Option(help="last day sampled", callback=date_arg)] = None) -> None:
    """Sample inputs from the lake, train the tokenizer of training.preset (FOUNDv2's MRQ-VAE, or
    U²QT-AAAI's Q-Former + MRQ-VAE with conf/model/u2qt_aaai_small.yaml), write it as a new bundle
    under model_dir/bundles and register it (not promoted: `u2qt evaluate`, then `u2qt promote`)."""
    if (start_date is None) != (end_date is None):
        raise typer.BadParameter("give both --start-date and --end-date, or neither")
    _echo(launch_step("train", config, set_, [d for d in (start_date, end_date) if d]))


@app.command("run-day")
def run_day(event_date: Annotated[str, typer.Argument(help="YYYY-MM-DD", callback=date_arg)],
            config: ConfigOption = None, set_: SetOption = None) -> None:
    """Tokenize one date directly (stage, quality gates, publish), without Airflow."""
    _echo(launch_step("run-day", config, set_, [event_date]))


@app.command()
def backfill(start: Annotated[Optional[str], typer.Argument(help="first date, YYYY-MM-DD")] = None,
             end: Annotated[Optional[str], typer.Argument(help="last date, YYYY-MM-DD (default: START)")] = None,
             dates: Annotated[Optional[str], typer.Option(help="instead of a range: comma-separated dates")] = None,
             config: ConfigOption = None, set_: SetOption = None,
             via_airflow: Annotated[bool, typer.Option(help="run each date as a u2qt_daily dag.test()")] = False,
             airflow_home: Annotated[Path, typer.Option(help="AIRFLOW_HOME for --via-airflow")] = Path(".u2qt/airflow")) -> None:
    """Tokenize every date from START to END (inclusive) or of --dates as one Spark job: all dates
    staged in one inference pass, gated in one pass and published together (as oldest first); dates
    without events are recorded as empty and skipped."""
    if dates and (start or end):
        raise typer.BadParameter("give either START [END] or --dates, not both")
    if dates:
        wanted = sorted({date_arg(d.strip()) for d in dates.split(",") if d.strip()})
    elif start:
        wanted = date_range(start, end or start)
    else:
        raise typer.BadParameter("give START [END] or --dates D1,D2,...")
    settings_from(config, set_)       # a bad config fails before anything starts
    if via_airflow:
        _run_dates_with_airflow(wanted, airflow_home, config, set_)
        return
    results = launch_step("backfill", config, set_, args={"dates": ",".join(wanted)})
    typer.echo(json.dumps({d: r["status"] for d, r in results.items()}, indent=2))


@app.command()
def features(start: Annotated[str, typer.Argument(help="first as-of date, YYYY-MM-DD")],
             end: Annotated[Optional[str], typer.Argument(help="last as-of date (default: START)")] = None,
             config: ConfigOption = None, set_: SetOption = None) -> None:
    """Build user_features as of every date from START to END: per user active in the last
    features.window_days, recency-weighted mean codebook vectors and a TF-IDF bag of codes
    (what the u2qt_features DAG runs after each night's publish)."""
    _echo(launch_step("features", config, set_, [start, end or start]))


@app.command("train-sequence")
def train_sequence(as_of: Annotated[str, typer.Argument(help="last day of the training histories, YYYY-MM-DD")],
                   config: ConfigOption = None, set_: SetOption = None) -> None:
    """Train the sequence encoder (token and window alignment tasks) on a hash sample of the token
    histories of the sequence_encoder.history_days up to AS_OF, for the tokenizer those days were
    tokenized with; with fused_embedding in features.representations, `u2qt features` then writes
    its embedding."""
    _echo(launch_step("train-sequence", config, set_, [as_of]))


@app.command("check-inputs")
def check_inputs(start: Annotated[Optional[str], typer.Argument(help="first event_date checked (default: all)")] = None,
                 end: Annotated[Optional[str], typer.Argument(help="last event_date checked (default: START)")] = None,
                 config: ConfigOption = None, set_: SetOption = None,
                 strict: Annotated[bool, typer.Option(help="exit 1 on warnings too")] = False) -> None:
    """Check raw_events and user_profile against the input contract (schemas and the sources
    config): one line per difference, 'error' (the night cannot run), 'warning' (rows it would
    quarantine or lose) or 'note'; also the data's cadence and, per window over days, the users
    and rows it drops (all of raw_events, windows ending at its newest event_date). Exit 1 on an
    error (with --strict: on a warning too)."""
    from pipelines.night.input_contract import check_inputs as run_check

    dates = date_range(start, end or start) if start else None
    settings = settings_from(config, set_)
    differences, rows = run_check(spark_for(settings, "u2qt_check_inputs"), settings, dates)
    for difference in differences:
        typer.echo(difference.line())
    failing = {"error", "warning"} if strict else {"error"}
    counts = {s: sum(d.severity == s for d in differences) for s in ("error", "warning", "note")}
    checked = ", ".join(f"{table} {n:,} rows" for table, n in rows.items())
    typer.echo(f"checked {checked or 'nothing'}: {counts['error']} errors, {counts['warning']} warnings, {counts['note']} notes")
    if any(d.severity in failing for d in differences):
        raise typer.Exit(1)


@app.command()
def maintain(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Delta upkeep: compact the history base, OPTIMIZE (Z-order on user_id where it helps),
    log retention, VACUUM (what the u2qt_maintenance DAG runs)."""
    _echo(launch_step("maintain", config, set_))


def _run_dates_with_airflow(dates: list[str], airflow_home: Path, config: Optional[Path], overrides: Optional[list[str]],
                            dag_id: str = "u2qt_daily") -> None:
    import os

    from pipelines.deploy.airflow_runner import prepare_airflow_home, run_dag_for_date

    if config:
        from pipelines.config.conf_files import is_url

        os.environ["U2QT_PIPELINE_CONFIG"] = config if is_url(config) else str(Path(config).absolute())
    if overrides:
        raise typer.BadParameter("--set is not passed through Airflow runs; use a config file or U2QT_* variables")
    prepare_airflow_home(airflow_home)
    for event_date in dates:
        run_dag_for_date(dag_id, event_date)


@app.command("init-tables")
def init_tables(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Create every missing output table, pinned to the promoted tokenizer, in the table
    generation its nights write (before parallel runs)."""
    for path in launch_step("init", config, set_)["tables"]:
        typer.echo(path)


@app.command()
def forget(user_ids: Annotated[Path, typer.Option("--user-ids", help="file with one user_id per line")],
           config: ConfigOption = None, set_: SetOption = None,
           vacuum_retain_hours: Annotated[Optional[float], typer.Option(
               help="VACUUM every table afterwards, keeping this many hours of old versions (0: none)")] = None) -> None:
    """Erase users from every table (identity groups they leave are re-ranked); see README for VACUUM."""
    from pipelines.ops.forget import read_user_ids

    read_user_ids(user_ids)   # before Spark starts: a bad file fails in a second
    args = {"user_ids": str(user_ids)}
    if vacuum_retain_hours is not None:
        args["vacuum_retain_hours"] = str(vacuum_retain_hours)
    _echo(launch_step("forget", config, set_, args=args))


@app.command()
def sql(query: Annotated[str, typer.Argument(help="Spark SQL over the tables (registered as views)")],
        config: ConfigOption = None, set_: SetOption = None,
        limit: Annotated[int, typer.Option(help="rows shown")] = 20) -> None:
    """Run Spark SQL over the token tables: user_day_tokens, user_token_history, user_tokens,
    user_features, user_day_token_strings, user_identity, quarantine, run_metrics, raw_events, user_profile."""
    settings = settings_from(config, set_)
    spark = spark_for(settings, "u2qt_sql")
    _register(spark, settings)
    spark.sql(query).show(limit, truncate=False)


def _register(spark, settings: PipelineSettings) -> list[str]:
    """Temp views over the current table generation (the pointer of pipelines/lake/lake.py)."""
    from pipelines.lake.views import register_views
    from pipelines.night.day_run import analyst_lake

    return register_views(*analyst_lake(spark, settings))


@app.command()
def tables(config: ConfigOption = None, set_: SetOption = None) -> None:
    """List the Delta tables of the current table generation with their location and row count."""
    from pipelines.lake.lake import Lake
    from pipelines.lake.tables import ALL_TABLES

    settings = settings_from(config, set_)
    spark = spark_for(settings, "u2qt_tables")
    now = Lake(spark, settings).current()
    lake = Lake(spark, settings, now.generation)
    typer.echo(f"generation {now.generation or '(first)'}: tokenizer {now.tokenizer_version or '-'}")
    for spec in ALL_TABLES:
        path = lake.path(spec.name)
        rows = lake.read(spec.name).count() if lake.exists(spec.name) else None
        typer.echo(f"{spec.name:<22} {'-' if rows is None else rows:>10}  {path}")


@app.command()
def catalog(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Register the tables and views under the catalog schema (default u2qt) in the persistent
    metastore, and write `<tables_root>/_catalog/spark.conf` for spark-sql / pyspark / notebooks."""
    from pipelines.lake.catalog import catalog_dir

    settings = settings_from(config, set_)
    typer.echo("\n".join(launch_step("catalog", config, set_)["registered"]))
    if settings.catalog.metastore == "embedded":
        typer.echo(f"spark-sql --properties-file {catalog_dir(settings) / 'spark.conf'}")


@app.command("submit-args")
def submit_args(step: Annotated[str, typer.Argument(help="a registered step (`u2qt step --list`)")],
                dates: Annotated[Optional[list[str]], typer.Argument(help="DATE, or START END")] = None,
                config: ConfigOption = None, set_: SetOption = None,
                arg: ArgOption = None,
                py_files_dir: Annotated[Optional[Path], typer.Option(help="where the --py-files zip is written")] = None) -> None:
    """Print the spark-submit command line that runs STEP on this machine (builds the --py-files zip)."""
    from pipelines import steps
    from pipelines.config.conf_files import is_url
    from pipelines.deploy.submit import build_py_files_zip, format_command, submit_command

    steps.prepare(step, settings := settings_from(config, set_), dates or [], args=steps.parse_args(arg))
    location = config if config is None or is_url(config) else str(Path(config).absolute())
    argv = submit_command(step, dates or [], config=location, profile=settings.spark_profile,
                          master=MASTER["master"], py_files=build_py_files_zip(py_files_dir), overrides=set_,
                          step_args=arg)
    typer.echo(format_command(argv))


@app.command()
def package(out: Annotated[Path, typer.Option(help="folder for the zip")] = Path("dist")) -> None:
    """Build the --py-files zip (pipelines, u2qt_core and the default conf as u2qt_conf)."""
    from pipelines.deploy.submit import build_py_files_zip

    typer.echo(str(build_py_files_zip(out)))


@app.command()
def demo(world_config: Annotated[Path, typer.Option(help="world YAML")] = Path("conf/world/demo.yaml"),
         config: ConfigOption = None, set_: SetOption = None,
         airflow_home: Annotated[Path, typer.Option(help="AIRFLOW_HOME (SQLite)")] = Path(".u2qt/airflow")) -> None:
    """The whole stack end to end (pipelines/deploy/demo.py): world -> train -> evaluate -> promote ->
    u2qt_daily DAG per date -> Spark SQL; retrain -> evaluate -> promote -> retokenize -> both
    table generations in Spark SQL; a night after the world moved -> the u2qt_retrain DAG its drift
    schedules -> the report page."""
    from pipelines.deploy.airflow_runner import prepare_airflow_home

    prepare_airflow_home(airflow_home)  # before anything imports airflow
    from pipelines.deploy.demo import run_demo
    from pipelines.world import load_world_config

    settings = settings_from(config, set_)
    world_cfg = load_world_config(world_config)   # a bad world config fails before Spark starts
    run_demo(spark_for(settings, "u2qt_demo"), settings, world_cfg,
             lambda dates: _run_dates_with_airflow(dates, airflow_home, config, set_), _register, typer.echo,
             run_retrain=lambda night: _run_dates_with_airflow([night], airflow_home, config, set_, "u2qt_retrain"))


@app.command("step")
def run_registered_step(name: Annotated[Optional[str], typer.Argument(help="a registered step (see --list)")] = None,
                        dates: Annotated[Optional[list[str]], typer.Argument(help="DATE, or START [END]")] = None,
                        config: ConfigOption = None, set_: SetOption = None, arg: ArgOption = None,
                        run_id: Annotated[Optional[str], typer.Option(help="run id recorded in run_metrics")] = None,
                        list_steps: Annotated[bool, typer.Option("--list", help="list the registered steps")] = False) -> None:
    """Run any registered step (the registry `pipelines/steps.py` that spark-submit and the DAGs
    run too): `u2qt step stage 2026-01-08`, `u2qt step promote --arg version=u2qt-...`."""
    from pipelines.steps import STEPS

    if list_steps or not name:
        for entry in STEPS.values():
            args = " ".join(f"--arg {a}=..." for a in entry.args)
            typer.echo(f"{entry.name:<15} {entry.dates:<15} {args:<40} {entry.summary}")
        return
    _echo(launch_step(name, config, set_, dates or [], args=arg, run_id=run_id))


def _echo(result) -> None:
    typer.echo(json.dumps(_jsonable(result), indent=2, default=str))


cli_lifecycle.register(app)   # evaluate, promote, versions, retokenize, generations
cli_reports.register(app)     # report, paper-eval


def _jsonable(obj):
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else obj


def _fail(message: str, code: int | None = EXIT_ERROR) -> None:
    """The one way the CLI reports an error: ``u2qt: error: <message>`` on stderr, exit ``code``
    (2; 3 for a failed gate: :func:`pipelines.errors.exit_code`)."""
    lines = [line for line in str(message).splitlines() if line.strip()] or ["(no message)"]
    for line in lines:        # a config with several bad keys: one line per key
        sys.stderr.write(f"u2qt: error: {line}\n")
    sys.stderr.flush()
    sys.exit(code or EXIT_ERROR)


def run(argv: list[str] | None = None) -> None:
    """Entry point: the one exit path for user-facing errors.

    ``U2QTError`` (config file/key, date, row, tokenizer version, quality gate...) and click's
    usage errors (``typer.BadParameter``, unknown options, missing arguments) become one line per
    problem on stderr and exit code 2, without a traceback; anything else is a bug and keeps its
    traceback. ``--help`` and a bare ``u2qt`` print the help as usual."""
    try:   # typer >= 0.2x carries its own click
        from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - older typer on the real click
        from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    try:
        code = app(args=argv, prog_name="u2qt", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        sys.exit(EXIT_ERROR)
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "u2qt"
        _fail(f"{command}: {exc.format_message()}")
    except ClickException as exc:
        _fail(exc.format_message())
    except typer.Abort:
        _fail("aborted")
    except U2QTError as exc:
        _fail(str(exc), exit_code(exc))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
