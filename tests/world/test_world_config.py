"""World configuration: every shipped YAML loads; bad parameters fail naming the key."""
from pathlib import Path

import pytest

from pipelines.world import WorldConfigError, load_world_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "world"


@pytest.mark.parametrize("name", ["demo", "tiny", "eval", "bench"])
def test_shipped_configs_load(name):
    cfg = load_world_config(CONF / f"{name}.yaml")
    assert cfg.n_users >= 1 and cfg.n_days >= 1


def test_demo_and_tiny_sizes():
    demo = load_world_config(CONF / "demo.yaml")
    tiny = load_world_config(CONF / "tiny.yaml")
    assert (demo.n_users, demo.n_days) == (500, 3) and demo.bad_row_rate > 0
    assert tiny.n_users <= 50 and tiny.n_days == 2 and tiny.bad_row_rate == 0


def test_overrides_win_over_file():
    cfg = load_world_config(CONF / "tiny.yaml", {"n_users": 5, "seed": 99})
    assert (cfg.n_users, cfg.seed) == (5, 99)


@pytest.mark.parametrize("override, expected", [
    ({"n_users": 0}, "tiny.yaml: n_users: must be >= 1"),
    ({"n_days": 0}, "n_days: must be >= 1"),
    ({"inactive_day_rate": 1.0}, "inactive_day_rate: must be < 1"),
    ({"bad_row_rate": -0.1}, "bad_row_rate: must be >= 0"),
    ({"n_userz": 10}, "n_userz: unknown key"),
    ({"start_date": "yesterday"}, "start_date:"),
    ({"bad_row_kinds": ["null_user_id", "typo"]}, "bad_row_kinds: unknown kinds ['typo']"),
    ({"source_weights": {"bill": 1.0, "tv": 1.0}}, "source_weights: unknown sources ['tv']"),
])
def test_bad_parameters_name_the_key(override, expected):
    with pytest.raises(WorldConfigError) as exc:
        load_world_config(CONF / "tiny.yaml", override)
    assert expected in str(exc.value)


def test_missing_required_key(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("seed: 1\nn_users: 3\nn_days: 2\n")
    with pytest.raises(WorldConfigError, match=r"w.yaml: start_date: required key is missing"):
        load_world_config(path)


def test_not_a_mapping(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(WorldConfigError, match="mapping"):
        load_world_config(path)
