"""The one config loader: the same error style for every config file, env expansion naming
the key, deep-merge semantics and ``--set`` parsing."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config.settings import load_settings
from pipelines.world import load_world_config
from u2qt_core.config import load_model_preset
from u2qt_core.config_loader import deep_merge, parse_overrides
from u2qt_core.errors import ConfigError
from u2qt_core.evaluation.config import load_eval_config

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize("loader, text, key", [
    (load_model_preset, "mrqvae: {sources: [bill], input_dims: {bill: 384}, bogus: 1}\n", "mrqvae.bogus"),
    (load_eval_config, "probe: {cv_foldz: 3}\n", "probe.cv_foldz"),
    (load_world_config, "seed: 1\nn_users: 2\nstart_date: 2026-01-01\nn_days: 1\nbogus: 1\n", "bogus"),
    (load_settings, "tables_root: x\nmodel_dir: y\nbogus: 1\n", "bogus"),
])
def test_every_config_names_file_and_key_the_same_way(tmp_path, loader, text, key) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        loader(path)
    assert str(exc.value) == f"{path}: {key}: unknown key"


@pytest.mark.parametrize("loader", [load_model_preset, load_eval_config, load_world_config, load_settings])
def test_unreadable_files_name_the_file(tmp_path, loader) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        loader(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: <root>: expected a mapping of keys, got list"):
        loader(path)
    path.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: invalid YAML"):
        loader(path)


def test_missing_environment_variable_names_file_and_key(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("U2QT_TEST_UNSET", raising=False)
    path = tmp_path / "pipeline.yaml"
    path.write_text("tables_root: ${U2QT_TEST_UNSET}\nmodel_dir: y\n")
    with pytest.raises(ConfigError, match=r"pipeline\.yaml: tables_root: environment variable U2QT_TEST_UNSET"):
        load_settings(path)
    monkeypatch.setenv("U2QT_TEST_UNSET", "/lake")
    assert load_settings(path).tables_root == "/lake"
    path.write_text("tables_root: ${U2QT_TEST_UNSET_TOO:-/fallback}\nmodel_dir: y\n")
    assert load_settings(path).tables_root == "/fallback"


def test_deep_merge_merges_replaces_and_deletes() -> None:
    base = {"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 3}
    merged = deep_merge(base, {"a": {"y": 5, "z": 6}, "b": [9], "c": None})
    assert merged == {"a": {"x": 1, "y": 5, "z": 6}, "b": [9]}
    assert base == {"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 3}  # not modified
    assert deep_merge(base, None) == base


def test_overrides_reach_nested_world_and_pipeline_keys() -> None:
    world = load_world_config(CONF / "world" / "tiny.yaml", parse_overrides(["source_weights.bill=1", "n_users=3"]))
    assert world.n_users == 3 and world.source_weights == {"bill": 1.0, "spm": 0.0, "mini": 0.0, "app": 0.0,
                                                           "search": 0.0}
    settings = load_settings(CONF / "pipeline.yaml", parse_overrides(["inference.partitions=7"]))
    assert settings.inference.partitions == 7


def test_parse_overrides() -> None:
    assert parse_overrides(["a.b=1", "a.c=x y", "d=[1, 2]", "e=null"]) == {"a": {"b": 1, "c": "x y"}, "d": [1, 2],
                                                                          "e": None}
    for bad in ("novalue", "=1", "a..b=1"):
        with pytest.raises(ConfigError, match="expected key.path=value"):
            parse_overrides([bad])
    with pytest.raises(ConfigError, match="already set to a value"):
        parse_overrides(["a=1", "a.b=2"])


def test_a_partial_config_takes_every_left_out_key_from_the_shipped_one(tmp_path) -> None:
    """README: keys a config of one's own leaves out take conf/pipeline.yaml's values (they took
    the model's defaults, and encoder.max_batch_tokens became None instead of 4096)."""
    path = tmp_path / "mine.yaml"
    path.write_text("tables_root: /lake\nmodel_dir: /models\nencoder: {max_length: 128}\n")
    mine = load_settings(path, parse_overrides(["inference.partitions=3"]))
    shipped = load_settings(overrides={"tables_root": "/lake", "model_dir": "/models", "encoder": {"max_length": 128},
                                       "inference": {"partitions": 3}})
    assert mine == shipped and mine.encoder.max_batch_tokens == 4096
    path.write_text("tables_root: /lake\nmodel_dir: /models\nencoder: {max_batch_tokens: null}\n")
    assert load_settings(path).encoder.max_batch_tokens is None      # null: the model's default
