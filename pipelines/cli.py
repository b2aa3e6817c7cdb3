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
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.day_run import iso_date
from pipelines.settings import PipelineSettings, load_settings
from u2qt_core.config_loader import parse_overrides
from u2qt_core.errors import InputError, U2QTError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
log = logging.getLogger("u2qt")

ConfigOption = Annotated[Optional[str], typer.Option("--config", "-c", help="pipeline YAML path or http(s)/file URL (default: the packaged conf/pipeline.yaml)")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override: key.path=value (repeatable)")]


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("py4j", "urllib3", "filelock", "httpx", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings(config: Optional[Path], overrides: Optional[list[str]]) -> PipelineSettings:
    return load_settings(config, parse_overrides(overrides))


_MASTER: dict[str, str | None] = {"master": None}   # the global --master option


def _spark(settings: PipelineSettings, app_name: str, extra_conf: dict[str, str] | None = None):
    from pipelines.spark_session import get_spark

    return get_spark(settings.spark_profile, app_name=app_name, extra_conf=extra_conf, master=_MASTER["master"])


def _date(value: Optional[str]) -> Optional[str]:
    """Typer callback: a ``YYYY-MM-DD`` date argument or option, checked before anything runs."""
    if value is None:
        return None
    try:
        return iso_date(value).isoformat()
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None


def _dates(start: str, end: str) -> list[str]:
    first, last = date.fromisoformat(_date(start)), date.fromisoformat(_date(end))
    if last < first:
        raise typer.BadParameter(f"end date {end} is before start date {start}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
         master: Annotated[Optional[str], typer.Option(help="Spark master (wins over $MASTER/$SPARK_MASTER and the profile)")] = None) -> None:
    _setup_logging(verbose)
    _MASTER["master"] = master


@app.command()
def world(world_config: Annotated[Path, typer.Argument(help="world YAML, e.g. conf/world/demo.yaml")],
          config: ConfigOption = None, set_: SetOption = None) -> None:
    """Write a synthetic world (raw_events, user_profile, labels, rec log) as Delta tables."""
    from pipelines.world import load_world_config, write_world

    settings = _settings(config, set_)
    world_cfg = load_world_config(world_config)     # a bad world config fails before Spark starts
    summary = write_world(_spark(settings, "u2qt_world"), world_cfg, settings.tables_root)
    typer.echo(json.dumps(_jsonable(summary), indent=2, default=str))


@app.command()
def train(config: ConfigOption = None, set_: SetOption = None,
          start_date: Annotated[Optional[str], typer.Option(help="first day sampled", callback=_date)] = None,
          end_date: Annotated[Optional[str], typer.Option(help="last day sampled", callback=_date)] = None) -> None:
    """Sample inputs from the lake, train the MRQ-VAE tokenizer, write it as a new bundle under
    model_dir/bundles and register it (not promoted: `u2qt evaluate`, then `u2qt promote`)."""
    from pipelines.train_job import train as train_tokenizer

    settings = _settings(config, set_)
    summary = train_tokenizer(_spark(settings, "u2qt_train"), settings, start_date=start_date, end_date=end_date)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "metrics"}, indent=2, default=str))


@app.command("evaluate")
def evaluate_version(version: Annotated[str, typer.Argument(help="tokenizer version, u2qt-...")],
                     config: ConfigOption = None, set_: SetOption = None) -> None:
    """Compute the promotion gates of a registered version on the held-out days and record them."""
    from pipelines.gates import evaluate

    settings = _settings(config, set_)
    result = evaluate(_spark(settings, "u2qt_evaluate"), settings, version)
    typer.echo(json.dumps(result, indent=2, default=str))
    if not result["passed"]:
        log.warning("tokenizer %s failed its gates: `u2qt promote` will refuse it", version)


@app.command()
def promote(version: Annotated[str, typer.Argument(help="tokenizer version, u2qt-...")],
            config: ConfigOption = None, set_: SetOption = None,
            force: Annotated[bool, typer.Option(help="promote without passing gates (recorded on the version)")] = False,
            reason: Annotated[str, typer.Option(help="why --force (recorded)")] = "") -> None:
    """Point the registry alias (champion) at VERSION: nights starting afterwards use it."""
    from pipelines.registry import promote as promote_version

    entry = promote_version(_settings(config, set_), version, force=force, reason=reason)
    typer.echo(json.dumps({"promoted": entry.tokenizer_version, "registry_version": entry.registry_version,
                           "bundle": entry.bundle}, indent=2))


@app.command()
def versions(config: ConfigOption = None, set_: SetOption = None) -> None:
    """List the registered tokenizer versions, their gates and which one the alias names."""
    from pipelines import registry

    settings = _settings(config, set_)
    try:
        champion = registry.resolve(settings).tokenizer_version
    except registry.RegistryError:
        champion = None
    for entry in registry.versions(settings):
        mark = f"@{settings.registry.alias}" if entry.tokenizer_version == champion else ""
        typer.echo(f"{entry.registry_version:>4} {entry.tokenizer_version} gates_passed="
                   f"{entry.tags.get(registry.PASSED_TAG, '-'):<5} {mark:<10} {entry.bundle}")


@app.command("run-day")
def run_day(event_date: Annotated[str, typer.Argument(help="YYYY-MM-DD", callback=_date)],
            config: ConfigOption = None, set_: SetOption = None) -> None:
    """Tokenize one date directly (stage, quality gates, publish), without Airflow."""
    from pipelines.daily_job import run_day as run

    settings = _settings(config, set_)
    metrics = run(_spark(settings, "u2qt_daily"), settings, event_date)
    typer.echo(json.dumps(metrics, indent=2, default=str))


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
        wanted = sorted({_dates(d.strip(), d.strip())[0] for d in dates.split(",") if d.strip()})
    elif start:
        wanted = _dates(start, end or start)
    else:
        raise typer.BadParameter("give START [END] or --dates D1,D2,...")
    settings = _settings(config, set_)
    if via_airflow:
        _run_dates_with_airflow(wanted, airflow_home, config, set_)
        return
    from pipelines.backfill import backfill as run_backfill

    results = run_backfill(_spark(settings, "u2qt_backfill"), settings, wanted)
    typer.echo(json.dumps({d: r["status"] for d, r in results.items()}, indent=2))


@app.command()
def retokenize(version: Annotated[str, typer.Option("--version", help="tokenizer version, u2qt-...")],
               start: Annotated[str, typer.Option("--from", help="first date, YYYY-MM-DD")],
               end: Annotated[str, typer.Option("--to", help="last date, YYYY-MM-DD")],
               config: ConfigOption = None, set_: SetOption = None) -> None:
    """Tokenize START..END with VERSION into a new table generation (one backfill job) and switch
    the views and the catalog to it atomically once complete; the old generation stays readable."""
    from pipelines.catalog import catalog_dir, catalog_session_conf, register_catalog
    from pipelines.retokenize import retokenize as run_retokenize

    _dates(start, end)
    settings = _settings(config, set_)
    with_catalog = settings.catalog.metastore == "embedded" and catalog_dir(settings).exists()
    spark = _spark(settings, "u2qt_retokenize", catalog_session_conf(settings) if with_catalog else None)
    result = run_retokenize(spark, settings, version, start, end)
    if with_catalog:
        result["catalog"] = register_catalog(spark, settings)
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command("generations")
def list_generations(config: ConfigOption = None, set_: SetOption = None) -> None:
    """The table generations switched to (newest last) and the current one's folder."""
    from pipelines.generations import current, history, with_generation

    settings = _settings(config, set_)
    spark = _spark(settings, "u2qt_generations")
    for row in history(spark, settings):
        typer.echo(json.dumps(row, default=str))
    now = current(spark, settings)
    typer.echo(f"current: {now.generation!r} ({now.tokenizer_version}) at "
               f"{Path(with_generation(settings, now.generation).table_path('user_day_tokens')).parent}")


@app.command()
def maintain(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Delta upkeep: compact the history base, OPTIMIZE (Z-order on user_id where it helps),
    log retention, VACUUM (what the u2qt_maintenance DAG runs)."""
    from pipelines.maintenance import maintain as run_maintenance

    settings = _settings(config, set_)
    report = run_maintenance(_spark(settings, "u2qt_maintain"), settings)
    typer.echo(json.dumps(report, indent=2, default=str))


def _run_dates_with_airflow(dates: list[str], airflow_home: Path, config: Optional[Path], overrides: Optional[list[str]]) -> None:
    import os

    from pipelines.airflow_runner import prepare_airflow_home, run_dag_for_date

    if config:
        from pipelines.conf_files import is_url

        os.environ["U2QT_PIPELINE_CONFIG"] = config if is_url(config) else str(Path(config).absolute())
    if overrides:
        raise typer.BadParameter("--set is not passed through Airflow runs; use a config file or U2QT_* variables")
    prepare_airflow_home(airflow_home)
    for event_date in dates:
        run_dag_for_date("u2qt_daily", event_date)


@app.command("init-tables")
def init_tables(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Create every missing output table, pinned to the promoted tokenizer, in the table
    generation its nights write (before parallel runs)."""
    from pipelines.daily_job import load_tokenizer_info
    from pipelines.tables import ensure_all

    from pipelines.generations import generation_for, with_generation

    settings = _settings(config, set_)
    version = load_tokenizer_info(settings).version
    spark = _spark(settings, "u2qt_init_tables")
    for path in ensure_all(spark, with_generation(settings, generation_for(spark, settings, version)), version):
        typer.echo(path)


@app.command()
def forget(user_ids: Annotated[Path, typer.Option("--user-ids", help="file with one user_id per line")],
           config: ConfigOption = None, set_: SetOption = None,
           vacuum_retain_hours: Annotated[Optional[float], typer.Option(
               help="VACUUM every table afterwards, keeping this many hours of old versions (0: none)")] = None) -> None:
    """Erase users from every table (identity groups they leave are re-ranked); see README for VACUUM."""
    from pipelines.forget import forget_users, read_user_ids

    ids = read_user_ids(user_ids)   # before Spark starts: a bad file fails in a second
    settings = _settings(config, set_)
    deleted = forget_users(_spark(settings, "u2qt_forget"), settings, ids, vacuum_retain_hours=vacuum_retain_hours)
    typer.echo(json.dumps({"users": len(ids), "rows_deleted": deleted}, indent=2))


@app.command()
def sql(query: Annotated[str, typer.Argument(help="Spark SQL over the tables (registered as views)")],
        config: ConfigOption = None, set_: SetOption = None,
        limit: Annotated[int, typer.Option(help="rows shown")] = 20) -> None:
    """Run Spark SQL over the token tables: user_day_tokens, user_token_history, user_tokens,
    user_day_token_strings, user_identity, quarantine, run_metrics, raw_events, user_profile."""
    settings = _settings(config, set_)
    spark = _spark(settings, "u2qt_sql")
    _register(spark, settings)
    spark.sql(query).show(limit, truncate=False)


def _register(spark, settings: PipelineSettings) -> list[str]:
    """Temp views over the current table generation (the pointer of pipelines/generations.py)."""
    from pipelines.generations import current, with_generation
    from pipelines.tables import register_views, tokenizer_token_format

    now = current(spark, settings)
    return register_views(spark, with_generation(settings, now.generation), tokenizer_token_format(settings, now.tokenizer_version))


@app.command()
def tables(config: ConfigOption = None, set_: SetOption = None) -> None:
    """List the Delta tables with their location and row count."""
    from pipelines.tables import ALL_TABLES, table_exists

    settings = _settings(config, set_)
    spark = _spark(settings, "u2qt_tables")
    for spec in ALL_TABLES:
        path = settings.table_path(spec.name)
        rows = spark.read.format("delta").load(path).count() if table_exists(spark, path) else None
        typer.echo(f"{spec.name:<22} {'-' if rows is None else rows:>10}  {path}")


@app.command()
def catalog(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Register the tables and views under the catalog schema (default u2qt) in the persistent
    metastore, and write <tables_root>/_catalog/spark.conf for spark-sql / pyspark / notebooks."""
    from pipelines.catalog import catalog_dir, catalog_session_conf, register_catalog

    settings = _settings(config, set_)
    names = register_catalog(_spark(settings, "u2qt_catalog", catalog_session_conf(settings)), settings)
    typer.echo("\n".join(names))
    if settings.catalog.metastore == "embedded":
        typer.echo(f"spark-sql --properties-file {catalog_dir(settings) / 'spark.conf'}")


@app.command("submit-args")
def submit_args(step: Annotated[str, typer.Argument(help="stage|quality|publish|train|maintain|backfill|catalog")],
                dates: Annotated[Optional[list[str]], typer.Argument(help="DATE, or START END")] = None,
                config: ConfigOption = None, set_: SetOption = None,
                py_files_dir: Annotated[Optional[Path], typer.Option(help="where the --py-files zip is written")] = None) -> None:
    """Print the spark-submit command line that runs STEP on this machine (builds the --py-files zip)."""
    from pipelines.conf_files import is_url
    from pipelines.submit import STEPS, build_py_files_zip, format_command, submit_command

    if step not in STEPS:
        raise typer.BadParameter(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    settings = _settings(config, set_)
    location = config if config is None or is_url(config) else str(Path(config).absolute())
    argv = submit_command(step, dates or [], config=location, profile=settings.spark_profile,
                          master=_MASTER["master"], py_files=build_py_files_zip(py_files_dir), overrides=set_)
    typer.echo(format_command(argv))


@app.command()
def package(out: Annotated[Path, typer.Option(help="folder for the zip")] = Path("dist")) -> None:
    """Build the --py-files zip (pipelines, u2qt_core and the default conf as u2qt_conf)."""
    from pipelines.submit import build_py_files_zip

    typer.echo(str(build_py_files_zip(out)))


@app.command()
def demo(world_config: Annotated[Path, typer.Option(help="world YAML")] = Path("conf/world/demo.yaml"),
         config: ConfigOption = None, set_: SetOption = None,
         airflow_home: Annotated[Path, typer.Option(help="AIRFLOW_HOME (SQLite)")] = Path(".u2qt/airflow")) -> None:
    """The whole stack end to end (pipelines/demo.py): world -> train -> evaluate -> promote ->
    u2qt_daily DAG per date -> Spark SQL; retrain -> evaluate -> promote -> retokenize -> both
    table generations in Spark SQL."""
    from pipelines.airflow_runner import prepare_airflow_home

    prepare_airflow_home(airflow_home)  # before anything imports airflow
    from pipelines.demo import run_demo
    from pipelines.world import load_world_config

    settings = _settings(config, set_)
    world_cfg = load_world_config(world_config)   # a bad world config fails before Spark starts
    run_demo(_spark(settings, "u2qt_demo"), settings, world_cfg,
             lambda dates: _run_dates_with_airflow(dates, airflow_home, config, set_), _register, typer.echo)


@app.command("eval")
def benchmark_eval(world_config: Annotated[Path, typer.Option(help="world YAML")] = Path("conf/world/eval.yaml"),
             eval_config: Annotated[Path, typer.Option(help="evaluation YAML")] = Path("conf/eval.yaml"),
             out: Annotated[Path, typer.Option(help="report folder")] = Path("reports/eval"),
             eval_set: Annotated[Optional[list[str]], typer.Option(
                 "--eval-set", help="evaluation override: key.path=value (repeatable)")] = None,
             config: ConfigOption = None, set_: SetOption = None) -> None:
    """Benchmark world -> embeddings -> tokenizers -> probes, MaskNet, ablations, storage -> report.

    ``--set`` overrides the pipeline settings (e.g. ``encoder.int8_dynamic=true``), ``--eval-set``
    the evaluation YAML (e.g. ``masknet.enabled=false``)."""
    from pipelines.eval_job import run_eval

    settings = _settings(config, set_)
    report = run_eval(_spark(settings, "u2qt_eval"), settings, world_config=world_config,
                      eval_config=eval_config, out_dir=out, eval_overrides=parse_overrides(eval_set))
    typer.echo(f"report written to {report}")


def _jsonable(obj):
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else obj


EXIT_ERROR = 2


def _fail(message: str) -> None:
    """The one way the CLI reports an error: ``u2qt: error: <message>`` on stderr, exit 2."""
    lines = [line for line in str(message).splitlines() if line.strip()] or ["(no message)"]
    for line in lines:        # a config with several bad keys: one line per key
        sys.stderr.write(f"u2qt: error: {line}\n")
    sys.stderr.flush()
    sys.exit(EXIT_ERROR)


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
        _fail(str(exc))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
