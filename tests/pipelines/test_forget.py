"""Erasure: ``u2qt forget`` removes users from every table, re-ranks the groups they leave, and
after VACUUM no data file of any table holds their rows."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.lake.views import read_view
from pipelines.ops.forget import erasure_targets, forget_users, read_user_ids, user_ids_present
from pipelines.lake.lake import Lake
from tests.conftest import REPO_ROOT
from tests.pipelines.collide_world import assert_consistent, identity_rows
from tests.pipelines.conftest import copy_lake
from u2qt_core.errors import InputError

FORGOTTEN = [1, 12, 30]   # a quarantined user, a user in group Y and one in group X


def _data_files_holding(spark, table_path: str, user_ids: list[int]) -> int:
    """Rows naming ``user_ids`` in the table's parquet files themselves, whatever the Delta log says."""
    files = [str(p) for p in Path(table_path).rglob("*.parquet") if "_delta_log" not in p.parts]
    if not files:
        return 0
    return user_ids_present(spark, spark.read.parquet(*files), user_ids)


def test_forget_erases_users_everywhere_and_reranks(spark, collided, tmp_path):
    settings = copy_lake(collided, tmp_path)
    before = {row[0]: row for row in identity_rows(spark, settings)}
    targets = erasure_targets(spark, settings)
    assert {"raw_events", "user_profile", "quarantine", "staging_day_tokens", "user_day_tokens",
            "user_tokens"} <= set(targets)   # plus user_token_history_base once `u2qt maintain` made it
    quarantine = Lake(spark, settings).read("quarantine")
    assert user_ids_present(spark, quarantine, [1]) == 1
    files_before = {name: _data_files_holding(spark, path, FORGOTTEN) for name, path in targets.items()}
    # the view's updated_at is the write time of the file a row lives in: erasure rewrites files
    history_columns = ["user_id", "source", "dates", "tokens", "tokens_per_day", "n_days", "last_date",
                       "tokenizer_version"]
    history = read_view(Lake(spark, settings), "user_token_history").select(*history_columns)
    others_history = history.where(~history.user_id.isin(FORGOTTEN)).orderBy("user_id", "source").collect()

    deleted = forget_users(spark, settings, FORGOTTEN, vacuum_retain_hours=0)

    for name, path in targets.items():
        frame = spark.read.format("delta").load(path)
        assert user_ids_present(spark, frame, FORGOTTEN) == 0, name
        assert _data_files_holding(spark, path, FORGOTTEN) == 0, name    # purged and vacuumed
    assert deleted["quarantine"] == 1 and deleted["raw_events"] > 0
    assert files_before["user_tokens"] >= 3 and files_before["user_day_tokens"] > 0
    # the groups they left are re-ranked: X = 11, 10, 13 (13's NaN engagement ranks last) and Y = 21, 20
    groups = assert_consistent(spark, settings)
    assert sorted(groups.values(), key=len)[-2:] == [[21, 20], [11, 10, 13]]
    after = {row[0]: row for row in identity_rows(spark, settings)}
    assert set(after) == set(before) - set(FORGOTTEN)
    unchanged = [uid for uid in after if uid not in (10, 11, 13, 20, 21)]
    assert all(after[uid] == before[uid] for uid in unchanged)
    # the others' data is untouched
    history = read_view(Lake(spark, settings), "user_token_history").select(*history_columns)
    assert history.orderBy("user_id", "source").collect() == others_history


def test_user_id_file_errors_name_file_and_line(tmp_path):
    good = tmp_path / "ids.txt"
    good.write_text("# erasure request 2026-12\n12\n\n30\n12\n")
    assert read_user_ids(good) == [12, 30]
    bad = tmp_path / "bad.txt"
    bad.write_text("12\nuser-30\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: .*'user-30'"):
        read_user_ids(bad)
    with pytest.raises(InputError, match="not found"):
        read_user_ids(tmp_path / "missing.txt")


def test_forget_cli_reports_a_bad_file_in_one_line(tmp_path):
    bad = tmp_path / "ids.txt"
    bad.write_text("1.5\n")
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "forget", "--user-ids", str(bad),
                           "--set", f"tables_root={tmp_path / 'lake'}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"{bad}:1: expected one integer user_id per line" in proc.stderr
    assert "Traceback" not in proc.stderr
