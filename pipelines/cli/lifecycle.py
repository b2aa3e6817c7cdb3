"""The tokenizer life-cycle commands of ``u2qt`` (see README "Tokenizer life cycle"):
``evaluate`` and ``promote`` a registered version, list ``versions``, ``retokenize`` a date range
into a new table generation, list the ``generations``. :func:`register` adds them to the app.
"""
from __future__ import annotations

import json
import logging
from typing import Annotated

import typer

from pipelines.cli.options import ConfigOption, SetOption, date_range, launch_step, settings_from, spark_for
from pipelines.errors import EXIT_GATE_FAILED

log = logging.getLogger("u2qt")



def evaluate_version(version: Annotated[str, typer.Argument(help="tokenizer version, u2qt-...")],
                     config: ConfigOption = None, set_: SetOption = None) -> None:
    """Compute the promotion gates of a registered version on the held-out days and record them
    (exit 3 when a gate fails)."""
    result = launch_step("evaluate", config, set_, args={"version": version})
    typer.echo(json.dumps(result, indent=2, default=str))
    if not result["passed"]:
        failed = [f"{name} = {gate['value']} (needs {gate['rule']})" for name, gate in result["gates"].items()
                  if not gate["passed"]]
        typer.echo(f"u2qt: tokenizer {version} failed its gates: {'; '.join(failed)}; `u2qt promote` will refuse it",
                   err=True)
        raise typer.Exit(EXIT_GATE_FAILED)


def promote(version: Annotated[str, typer.Argument(help="tokenizer version, u2qt-...")],
            config: ConfigOption = None, set_: SetOption = None,
            force: Annotated[bool, typer.Option(help="promote without passing gates (recorded on the version)")] = False,
            reason: Annotated[str, typer.Option(help="why --force (recorded)")] = "") -> None:
    """Point the registry alias (champion) at VERSION: nights starting afterwards use it."""
    result = launch_step("promote", config, set_, args={"version": version, "force": str(force), "reason": reason})
    typer.echo(json.dumps(result, indent=2))


def versions(config: ConfigOption = None, set_: SetOption = None) -> None:
    """List the registered tokenizer versions, their gates and which one the alias names."""
    from pipelines.tokenizer import registry

    settings = settings_from(config, set_)
    try:
        champion = registry.resolve(settings).tokenizer_version
    except registry.RegistryError:
        champion = None
    for entry in registry.versions(settings):
        mark = f"@{settings.registry.alias}" if entry.tokenizer_version == champion else ""
        typer.echo(f"{entry.registry_version:>4} {entry.tokenizer_version} gates_passed="
                   f"{entry.tags.get(registry.PASSED_TAG, '-'):<5} {mark:<10} {entry.bundle}")


def retokenize(version: Annotated[str, typer.Option("--version", help="tokenizer version, u2qt-...")],
               start: Annotated[str, typer.Option("--from", help="first date, YYYY-MM-DD")],
               end: Annotated[str, typer.Option("--to", help="last date, YYYY-MM-DD")],
               config: ConfigOption = None, set_: SetOption = None) -> None:
    """Tokenize START..END with VERSION into a new table generation (one backfill job) and switch
    the views and the catalog to it atomically once complete; the old generation stays readable."""
    date_range(start, end)
    result = launch_step("retokenize", config, set_, [start, end], args={"version": version})
    typer.echo(json.dumps(result, indent=2, default=str))


def list_generations(config: ConfigOption = None, set_: SetOption = None) -> None:
    """The table generations switched to (newest last) and the current one's folder."""
    from pipelines.lake.lake import Lake

    settings = settings_from(config, set_)
    lake = Lake(spark_for(settings, "u2qt_generations"), settings)
    for row in lake.switches():
        typer.echo(json.dumps(row, default=str))
    now = lake.current()
    typer.echo(f"current: {now.generation!r} ({now.tokenizer_version}) at {lake.at(now.generation).folder}")


def register(app: typer.Typer) -> None:
    """Add the life-cycle commands to ``app`` under their CLI names."""
    app.command("evaluate")(evaluate_version)
    app.command("promote")(promote)
    app.command("versions")(versions)
    app.command("retokenize")(retokenize)
    app.command("generations")(list_generations)
