"""Model preset loading and validation (u2qt_core.config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from u2qt_core.config import MRQVAEConfig, load_model_preset
from u2qt_core.errors import ConfigError
from tests.conftest import world_layout

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _tiny_raw() -> dict:
    """conf/model/tiny.yaml with the world's sources written in: a complete standalone preset."""
    raw = yaml.safe_load((CONF_DIR / "tiny.yaml").read_text(encoding="utf-8"))
    raw["mrqvae"].update(world_layout().as_mrqvae_keys())
    return raw


@pytest.mark.parametrize("name", ["default", "paper_v2", "small", "tiny"])
def test_shipped_presets_are_valid(name: str) -> None:
    preset = load_model_preset(CONF_DIR / f"{name}.yaml", layout=world_layout())
    cfg = preset.mrqvae
    assert cfg.sources == ["bill", "spm", "mini", "app", "search", "tabular"]
    assert cfg.input_dims["tabular"] == 13
    assert cfg.tabular_sources == ["tabular"]
    assert cfg.num_levels == cfg.shared_levels + cfg.specific_levels


def test_paper_v2_matches_the_paper() -> None:
    cfg = load_model_preset(CONF_DIR / "paper_v2.yaml", layout=world_layout(1024)).mrqvae   # Qwen3-0.6B width
    assert (cfg.shared_levels, cfg.specific_levels, cfg.num_codes, cfg.code_dim) == (4, 2, 1024, 256)
    assert cfg.input_dims["bill"] == 1024 and cfg.embed_dim == 1024 and cfg.hidden_dim == 1024


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    raw = _tiny_raw()
    raw["mrqvae"]["num_codez"] = 8
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_model_preset(path)
    message = str(info.value)
    assert str(path) in message and "mrqvae.num_codez" in message


def test_bad_value_names_key_path(tmp_path: Path) -> None:
    raw = _tiny_raw()
    raw["mrqvae"]["num_codes"] = 1
    with pytest.raises(ConfigError, match=r"preset\.yaml: mrqvae\.num_codes: "):
        load_model_preset(_write(tmp_path, raw))
    raw = _tiny_raw()
    raw["train"]["lr"] = -1
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_model_preset(_write(tmp_path, raw))


def test_cross_field_problems_name_the_key(tmp_path: Path) -> None:
    raw = _tiny_raw()
    del raw["mrqvae"]["input_dims"]["spm"]
    with pytest.raises(ConfigError, match=r"mrqvae\.input_dims\.spm: missing"):
        load_model_preset(_write(tmp_path, raw))
    raw = _tiny_raw()
    raw["mrqvae"]["tabular_sources"] = ["profile"]
    with pytest.raises(ConfigError, match=r"mrqvae\.tabular_sources: 'profile'"):
        load_model_preset(_write(tmp_path, raw))
    raw = _tiny_raw()
    raw["mrqvae"]["shared_levels"] = 0
    raw["mrqvae"]["specific_levels"] = 0
    with pytest.raises(ConfigError, match=r"mrqvae\.shared_levels"):
        load_model_preset(_write(tmp_path, raw))


def test_overrides_are_merged_before_validation() -> None:
    preset = load_model_preset(CONF_DIR / "default.yaml", overrides={"mrqvae": {"num_codes": 64}}, layout=world_layout())
    assert preset.mrqvae.input_dims == {**{s: 384 for s in ["bill", "spm", "mini", "app", "search"]}, "tabular": 13}
    assert preset.mrqvae.num_codes == 64
    with pytest.raises(ConfigError, match=r"mrqvae\.input_dims\.bill: text source width 1024 != embed_dim 384"):
        load_model_preset(CONF_DIR / "default.yaml", overrides={"mrqvae": {"input_dims": {"bill": 1024}}},
                          layout=world_layout())


def test_a_preset_without_a_layout_names_the_missing_key() -> None:
    with pytest.raises(ConfigError, match=r"default\.yaml: mrqvae\.sources: "):
        load_model_preset(CONF_DIR / "default.yaml")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_model_preset(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mrqvae: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_model_preset(bad)


def test_source_names_must_be_token_safe() -> None:
    with pytest.raises(ValueError, match="no digits"):
        MRQVAEConfig(sources=["app2"], input_dims={"app2": 384})
    with pytest.raises(ValueError, match="reserved"):
        MRQVAEConfig(sources=["s"], input_dims={"s": 384})


def test_text_only_config_needs_no_tabular_sources() -> None:
    cfg = MRQVAEConfig(sources=["bill"], input_dims={"bill": 384})
    assert cfg.tabular_sources == [] and cfg.text_sources == ["bill"]


def test_code_range_must_fit_int16_storage(tmp_path: Path) -> None:
    """Codes are stored as smallint: K (or a union level's K x (1 + sources)) must fit."""
    raw = _tiny_raw()
    raw["mrqvae"]["num_codes"] = 32768  # codes 0..32767: the largest int16
    assert load_model_preset(_write(tmp_path, raw)).mrqvae.code_table_size == 32768
    raw["mrqvae"]["num_codes"] = 40000
    with pytest.raises(ConfigError, match=r"mrqvae\.num_codes: .*int16"):
        load_model_preset(_write(tmp_path, raw))
    raw["mrqvae"].update(num_codes=8192, variant="union")  # 8192 x (1 + 6 sources) = 57344
    with pytest.raises(ConfigError, match=r"mrqvae\.num_codes: a union level holds .* = 57344 codes"):
        load_model_preset(_write(tmp_path, raw))
    raw["mrqvae"]["num_codes"] = 4096  # 28672 codes fit
    cfg = load_model_preset(_write(tmp_path, raw)).mrqvae
    assert cfg.code_table_size == 4096 * 7
    assert cfg.token_shared_levels == 0  # no union level is wholly shared


def test_model_presets_take_their_sources_from_the_sources_config(tmp_path: Path) -> None:
    """Presets hold the architecture only: loaded with the sources config's layout they get its
    sources and tabular width; a preset that names sources itself is refused, naming the key."""
    from pipelines.config.config_loading import CONF_DIR
    from pipelines.config.settings import load_sources
    from u2qt_core.config import load_model_preset
    from u2qt_core.errors import ConfigError

    sources = load_sources()
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        preset = load_model_preset(path, layout=sources.layout(384))
        mrqvae = preset.mrqvae
        assert mrqvae.sources == sources.all_sources, path
        if preset.architecture == "u2qt_aaai":   # the front end reads the features one by one
            assert preset.u2qt.input_dims[sources.tabular.name] == 1, path
            assert preset.u2qt.context_sources == sources.context_sources, path
        else:
            assert mrqvae.input_dims[sources.tabular.name] == sources.tabular.width, path
    named = tmp_path / "named.yaml"
    named.write_text("mrqvae: {sources: [bill, tabular], num_codes: 16}\n")
    with pytest.raises(ConfigError, match=r"named.yaml: mrqvae.sources: a preset holds the architecture only"):
        load_model_preset(named, layout=sources.layout(384))


def test_shipped_sequence_encoder_config_fits_its_histories() -> None:
    """conf/sequence.yaml is a valid AlignmentConfig whose position table holds the pipeline's
    longest history (sequence_encoder.max_steps steps of the shipped presets' 4 tokens)."""
    from pipelines.config.config_loading import load_model
    from pipelines.config.settings import load_settings
    from u2qt_core.alignment import AlignmentConfig

    settings = load_settings()
    config = load_model(AlignmentConfig, settings.resolve(settings.sequence_encoder.model))
    assert config.pooling == "codes_with_summary"
    assert config.max_tokens >= settings.sequence_encoder.max_steps * 4
