"""The step registry is the one way a step starts: the CLI, spark-submit's entry point and the DAG
tasks all dispatch through it, check dates the same way and map errors to the same exit codes."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines import steps
from pipelines.errors import EXIT_ERROR, EXIT_GATE_FAILED, QualityGateFailed
from u2qt_core.errors import InputError

CALLS: list[tuple] = []


@pytest.fixture
def echo_step():
    """A step added the way a new one is: one registry entry (removed afterwards)."""

    @steps.step("echo-test", "test step: echoes its call", dates="range", args=("mode",))
    def _echo(call: steps.StepCall) -> dict:
        CALLS.append((call.dates, call.run_id, call.args))
        if call.arg("mode") == "gate":
            raise QualityGateFailed(f"{call.dates[0]}: gate failed on purpose")
        if call.arg("mode") == "input":
            raise InputError(f"{call.dates[0]}: bad input on purpose")
        return {"days": call.days(), "run_id": call.run_id}

    CALLS.clear()
    yield "echo-test"
    steps.STEPS.pop("echo-test")


def test_one_registry_entry_reaches_cli_submit_and_dags(echo_step, monkeypatch) -> None:
    from pipelines.cli.main import app
    from pipelines.deploy import submit
    from pipelines.deploy.dag_builder import run_in_process

    result = CliRunner().invoke(app, ["step", echo_step, "2026-01-05", "2026-01-06", "--run-id", "r1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"days": ["2026-01-05", "2026-01-06"], "run_id": "r1"}

    listed = CliRunner().invoke(app, ["step", "--list"]).output
    assert echo_step in listed and all(name in listed for name in ("stage", "publish", "promote", "forget"))

    assert echo_step in submit.parse_args([echo_step, "2026-01-05"]).step
    submit.main([echo_step, "2026-01-05", "--run-id", "r2", "--arg", "mode=ok"])
    assert CALLS[-1] == (["2026-01-05", "2026-01-05"], "r2", {"mode": "ok"})

    assert run_in_process(echo_step, ["2026-01-07"], "scheduled__x") == {"days": ["2026-01-07"], "run_id": "scheduled__x"}


@pytest.mark.parametrize("mode, code", [("gate", EXIT_GATE_FAILED), ("input", EXIT_ERROR)])
def test_cli_and_submit_exit_with_the_same_code(echo_step, mode, code, capsys) -> None:
    from pipelines.cli.main import run
    from pipelines.deploy import submit

    for main in (lambda: submit.main([echo_step, "2026-01-05", "--arg", f"mode={mode}"]),
                 lambda: run(["step", echo_step, "2026-01-05", "--arg", f"mode={mode}"])):
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == code
    assert "on purpose" in capsys.readouterr().err


def test_dates_and_arguments_are_checked_before_anything_runs(echo_step) -> None:
    from pipelines.config.settings import load_settings

    settings = load_settings()
    with pytest.raises(InputError, match="step stage takes one DATE"):
        steps.prepare("stage", settings, ["2026-01-05", "2026-01-06"])
    with pytest.raises(InputError, match="not a date"):
        steps.prepare("stage", settings, ["20260105"])
    with pytest.raises(InputError, match="end date 2026-01-04 is before"):
        steps.prepare(echo_step, settings, ["2026-01-05", "2026-01-04"])
    with pytest.raises(InputError, match="missing argument.*version"):
        steps.prepare("promote", settings)
    with pytest.raises(InputError, match="unknown argument"):
        steps.prepare(echo_step, settings, ["2026-01-05"], args={"colour": "red"})
    with pytest.raises(InputError, match="unknown step 'nope'"):
        steps.prepare("nope", settings)
    assert not CALLS


def test_every_dag_step_is_registered() -> None:
    """The DAG files name steps by string; each must be in the registry (a typo fails the parse)."""
    import re
    from pathlib import Path

    dags = Path(__file__).resolve().parents[2] / "dags"
    named = {m for f in dags.glob("*.py") for m in re.findall(r'(?:step_task|run_in_process)\("([a-z-]+)"', f.read_text())}
    assert named and named <= set(steps.STEPS), named - set(steps.STEPS)
