"""What every ``u2qt`` command shares: the ``--config`` / ``--set`` options, the pipeline
settings and Spark session they make, and the date arguments checked before Spark starts.

Kept apart from :mod:`pipelines.cli.main` so each group of commands (:mod:`pipelines.cli.lifecycle`)
can live in its own module without importing the whole command line.
"""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipelines import dates as pipeline_dates
from pipelines.config.settings import PipelineSettings, load_settings
from u2qt_core.config_loader import parse_overrides
from u2qt_core.errors import InputError

ConfigOption = Annotated[Optional[str], typer.Option("--config", "-c", help="pipeline YAML path or http(s)/file URL (default: the packaged conf/pipeline.yaml)")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override: key.path=value (repeatable)")]
ArgOption = Annotated[Optional[list[str]], typer.Option("--arg", help="the step's own argument: key=value (repeatable)")]


def settings_from(config: Optional[str], overrides: Optional[list[str]]) -> PipelineSettings:
    """The pipeline settings of ``--config`` with the ``--set`` overrides, validated."""
    return load_settings(config, parse_overrides(overrides))


MASTER: dict[str, str | None] = {"master": None}   # the global --master option


def spark_for(settings: PipelineSettings, app_name: str, extra_conf: dict[str, str] | None = None):
    """The Spark session of a command: the profile's, with the global ``--master`` if given."""
    from pipelines.runtime.spark_session import get_spark

    return get_spark(settings.spark_profile, app_name=app_name, extra_conf=extra_conf, master=MASTER["master"])


def date_arg(value: Optional[str]) -> Optional[str]:
    """Typer callback: a ``YYYY-MM-DD`` date argument or option, checked before anything runs."""
    if value is None:
        return None
    try:
        return pipeline_dates.iso_date(value).isoformat()
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None


def date_range(start: str, end: str) -> list[str]:
    """Every date from ``start`` to ``end`` inclusive (:func:`pipelines.dates.date_range`); its
    :class:`InputError` (a malformed date, ``end`` earlier) as a usage error."""
    try:
        return pipeline_dates.date_range(start, end)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None


def launch_step(name: str, config: Optional[str], overrides: Optional[list[str]], dates: list[str] | None = None,
                args: dict[str, str] | list[str] | None = None, run_id: Optional[str] = None):
    """Run registered step ``name`` (:func:`pipelines.steps.launch`) with the command's settings and
    the global ``--master``; its result."""
    from pipelines import steps

    if isinstance(args, list) or args is None:
        args = steps.parse_args(args)
    return steps.launch(name, settings_from(config, overrides), dates or [], run_id, args, master=MASTER["master"])
