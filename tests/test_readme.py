"""The README's tables checked against the code, so they cannot drift: the CLI table names every
``u2qt`` command and nothing else, the config table names only keys the settings models have,
and every section of ``PipelineSettings`` is in it. (The Spark SQL examples and the PyTorch
snippet run in tests/pipelines/test_features.py, against a real lake.)"""
from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(heading: str) -> str:
    start = README.index(f"\n{heading}\n")
    following = re.search(r"\n## ", README[start + len(heading) + 2:])
    return README[start:start + len(heading) + 2 + (following.start() if following else len(README))]


def _cli_commands() -> set[str]:
    from typer.main import get_command

    from pipelines.cli.main import app

    return set(get_command(app).commands)


def test_cli_table_names_every_command_and_only_commands() -> None:
    table = [line for line in _section("## CLI").splitlines() if line.startswith("| `u2qt")]
    named = {m for line in table for m in re.findall(r"`u2qt ([a-z][a-z-]*)", line.split(" | ")[0])}
    commands = _cli_commands()
    assert named - commands == set(), f"README's CLI table names commands u2qt lacks: {named - commands}"
    assert commands - named == set(), f"commands missing from README's CLI table: {commands - named}"


def _names(model: type[BaseModel], seen: set | None = None) -> set[str]:
    """Every field name and literal value reachable from ``model``."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    out: set[str] = set()

    def walk(annotation) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.update(_names(annotation, seen))
        elif typing.get_origin(annotation) is typing.Literal:
            out.update(str(v) for v in typing.get_args(annotation))
        for arg in typing.get_args(annotation):
            walk(arg)

    for name, field in model.model_fields.items():
        out.add(name)
        walk(field.annotation)
    return out


def test_config_table_names_only_real_keys_and_every_section() -> None:
    from pipelines.config.settings import PipelineSettings

    row = next(line for line in _section("## Configuration (`conf/`)").splitlines() if line.startswith("| `pipeline.yaml`"))
    quoted = set(re.findall(r"`([a-z_][a-z0-9_.]*)`", row)) - {"pipeline.yaml", "u2qt evaluate"}
    keys = {part for q in quoted for part in q.split(".")}
    known = _names(PipelineSettings)
    assert keys - known == set(), f"README's config table names keys the settings lack: {keys - known}"
    sections = {name for name, f in PipelineSettings.model_fields.items()}
    assert sections - keys == set(), f"settings sections missing from README's config table: {sections - keys}"
