"""The CLI's one exit path: every user-facing error is one line on stderr naming what is wrong
(file, key, date, value), exit code 2, no traceback, and Spark never starts for it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.cli import main as cli
from tests.conftest import REPO_ROOT


@pytest.fixture
def no_spark(monkeypatch):
    """Fail the test if a command gets as far as starting Spark."""
    def tripwire(*args, **kwargs):
        raise AssertionError("Spark was started before the error was reported")

    from pipelines.runtime import spark_session

    monkeypatch.setattr(spark_session, "get_spark", tripwire)   # where every command starts Spark


def _fails(capsys, argv: list[str]) -> list[str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(argv)
    assert exit_info.value.code == 2, argv
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("u2qt: error: ") for line in lines), err
    assert "Traceback" not in err
    return lines


@pytest.mark.parametrize("argv, expected", [
    (["run-day", "2026-02-30"], "date '2026-02-30' is not a calendar date (YYYY-MM-DD): day is out of range for month"),
    (["run-day", "20260108"], "date '20260108' is not a date in YYYY-MM-DD form"),
    (["backfill", "2026-01-05", "2026-1-6"], "date '2026-1-6' is not a date in YYYY-MM-DD form"),
    (["backfill", "--dates", "2026-01-05,2026-02-29"], "date '2026-02-29' is not a calendar date"),
    (["backfill", "2026-01-06", "2026-01-05"], "end date 2026-01-05 is before start date 2026-01-06"),
    (["train", "--start-date", "2026-13-01"], "Invalid value for '--start-date': date '2026-13-01'"),
    (["run-day", "2026-01-05", "--set", "quality"], "--set 'quality': expected key.path=value"),
    (["run-day", "2026-01-05", "--set", "quality.max_collision_rate=3"],
     "pipeline.yaml: quality.max_collision_rate: must be <= 1"),
    (["run-day", "2026-01-05", "--no-such-option"], "No such option: --no-such-option"),
    (["run-day"], "u2qt run-day: Missing argument 'event_date'"),
])
def test_usage_and_config_errors_are_one_line(capsys, no_spark, argv, expected):
    lines = _fails(capsys, argv)
    assert len(lines) == 1 and expected in lines[0], lines


def test_world_and_environment_errors_name_file_and_key(capsys, no_spark, tmp_path, monkeypatch):
    world = tmp_path / "world.yaml"
    world.write_text("seed: 1\nn_users: -5\n")
    lines = _fails(capsys, ["world", str(world), "--set", f"tables_root={tmp_path / 'lake'}"])
    assert f"u2qt: error: {world}: n_users: must be >= 1 (got -5)" in lines   # one line per bad key
    (line,) = _fails(capsys, ["world", str(tmp_path / "missing.yaml")])
    assert f"{tmp_path / 'missing.yaml'}: config file not found" in line

    monkeypatch.delenv("U2QT_NOT_SET", raising=False)
    config = tmp_path / "pipeline.yaml"
    config.write_text("tables_root: x\nmodel_dir: y\ncatalog:\n  metastore: ${U2QT_NOT_SET}\n")
    (line,) = _fails(capsys, ["tables", "--config", str(config)])
    assert f"{config}: catalog.metastore: environment variable U2QT_NOT_SET is not set" in line


def test_console_script_reports_a_bad_date_before_spark(tmp_path):
    """End to end through the interpreter: one line on stderr, exit 2, well before Spark could start."""
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "run-day", "20260108"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "YYYY-MM-DD" in proc.stderr
    assert "Traceback" not in proc.stderr and "SparkContext" not in proc.stderr


def test_iso_date_refuses_what_python_would_accept():
    from pipelines.dates import iso_date
    from pipelines.night.day_run import dates_predicate
    from u2qt_core.errors import InputError

    assert iso_date("2026-01-08").isoformat() == "2026-01-08"
    for bad in ("20260108", "2026-W02-4", "2026-01-08T00:00", "2026-02-30", ""):
        with pytest.raises(InputError, match="event date"):
            dates_predicate([bad])


def test_help_shows_every_command_s_docstring_whole(capsys, no_spark):
    """`u2qt --help` renders each command's help as written: markdown mode keeps [...] and
    <...> that rich markup used to swallow ("features.representations:  then writes")."""
    import re

    with pytest.raises(SystemExit) as exit_info:
        cli.run(["--help"])
    assert exit_info.value.code == 0
    shown = " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    for command in cli.app.registered_commands:
        doc = (command.callback.__doc__ or "").split("\n\n")[0]
        words = " ".join(doc.replace("`", "").split())
        assert words[:60] in shown, (command.name, words[:60])
    assert "u2qt features then writes its embedding" in shown and "(OUT/<world>/report.md," in shown
