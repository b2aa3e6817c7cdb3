"""The report commands of ``u2qt``: ``report`` (the HTML picture of the nights) and
``paper-eval`` (the papers' evaluation on the synthetic evaluation worlds). :func:`register`
adds them to the app."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli.options import ConfigOption, SetOption, date_arg, launch_step, settings_from, spark_for
from u2qt_core.config_loader import parse_overrides


def report(start: Annotated[str, typer.Option("--from", help="first night, YYYY-MM-DD", callback=date_arg)],
           end: Annotated[str, typer.Option("--to", help="last night, YYYY-MM-DD", callback=date_arg)],
           out: Annotated[Path, typer.Option(help="the HTML page to write")] = Path("u2qt-report.html"),
           config: ConfigOption = None, set_: SetOption = None) -> None:
    """One self-contained HTML page of the nights FROM..TO: active users, quarantine, collisions,
    utilization, drift and fidelity per source, thresholds and promotions / retokenizations /
    retraining marks drawn in."""
    typer.echo(json.dumps(launch_step("report", config, set_, [start, end], args={"out": str(out)}), indent=2, default=str))


def benchmark_eval(world_config: Annotated[Optional[list[Path]], typer.Option(
                       help="world YAML (repeatable; default conf/world/eval.yaml and conf/world/eval_b.yaml)")] = None,
                   eval_config: Annotated[Path, typer.Option(help="evaluation YAML")] = Path("conf/eval.yaml"),
                   out: Annotated[Path, typer.Option(help="report folder")] = Path("reports/eval"),
                   eval_set: Annotated[Optional[list[str]], typer.Option(
                       "--eval-set", help="evaluation override: key.path=value (repeatable)")] = None,
                   config: ConfigOption = None, set_: SetOption = None) -> None:
    """Benchmark worlds -> embeddings -> tokenizers -> probes, MaskNet, ablations, storage -> a
    report per world (`OUT/<world>/report.md`, its world's tables under
    `<tables_root>/_eval_worlds/<world>`) and `OUT/summary.md` comparing them.

    ``--set`` overrides the pipeline settings (e.g. ``encoder.int8_dynamic=true``), ``--eval-set``
    the evaluation YAML (e.g. ``masknet.enabled=false``)."""
    from pipelines.evaluation.eval_job import run_eval
    from pipelines.world import load_world_config
    from u2qt_core.evaluation.summary import worlds_summary

    worlds = world_config or [Path("conf/world/eval.yaml"), Path("conf/world/eval_b.yaml")]
    names = [w.stem for w in worlds]
    if len(set(names)) != len(names):
        raise typer.BadParameter(f"world files need distinct names, got {names}")
    for world in worlds:          # every world config is checked before Spark starts
        load_world_config(world)
    settings = settings_from(config, set_)
    spark = spark_for(settings, "u2qt_eval")
    results = {}
    for name, world in zip(names, worlds):
        world_settings = settings.model_copy(update={"tables_root": str(Path(settings.tables_root) / "_eval_worlds" / name)})
        report = run_eval(spark, world_settings, world_config=world, eval_config=eval_config, out_dir=out / name,
                          eval_overrides=parse_overrides(eval_set))
        typer.echo(f"report written to {report}")
        results[name] = json.loads((out / name / "results.json").read_text())
    text, table = worlds_summary(results)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(table, indent=2))
    typer.echo(text)


def register(app: typer.Typer) -> None:
    """Add the report commands to ``app`` under their CLI names."""
    app.command("report")(report)
    app.command("paper-eval")(benchmark_eval)
