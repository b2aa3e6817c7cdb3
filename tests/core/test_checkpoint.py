"""Tokenizer save / load: safetensors + JSON, version hash, mismatch detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from u2qt_core.checkpoint import load_tokenizer, save_tokenizer, tokenizer_version
from u2qt_core.config import MRQVAEConfig
from u2qt_core.errors import CheckpointError
from u2qt_core.mrqvae import MRQVAE, mean_loss


SOURCES = ["bill", "tabular"]


def tiny_config(**overrides: object) -> MRQVAEConfig:
    base: dict[str, object] = dict(
        sources=SOURCES, input_dims={"bill": 12, "tabular": 5}, embed_dim=12,
        num_codes=16, code_dim=8, hidden_dim=32, kmeans_buffer_multiple=2, kmeans_iters=3,
    )
    base.update(overrides)
    return MRQVAEConfig(**base)


@pytest.fixture(scope="module")
def model_and_data() -> tuple[MRQVAE, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    data = {"bill": torch.randn(64, 12), "tabular": torch.rand(64, 5)}
    model = MRQVAE(tiny_config())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(8):
        loss = mean_loss(model.forward_batch(data))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert model.uninitialized_codebooks() == []
    return model, data


def test_save_then_load_gives_identical_codes_and_version(tmp_path: Path, model_and_data) -> None:
    model, data = model_and_data
    version = save_tokenizer(model, tmp_path / "tok", extra={"steps": 8})
    assert version == tokenizer_version(model) and version.startswith("u2qt-") and len(version) == 17
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", "model.safetensors"]
    loaded, loaded_version = load_tokenizer(tmp_path / "tok")
    assert loaded_version == version and not loaded.training
    for source, x in data.items():
        assert torch.equal(loaded.quantize(x, source), model.quantize(x, source))
    payload = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert payload["tokenizer_version"] == version and payload["extra"] == {"steps": 8}
    assert payload["mrqvae"]["num_codes"] == 16


def test_version_is_deterministic_and_content_sensitive(tmp_path: Path, model_and_data) -> None:
    model, _ = model_and_data
    assert tokenizer_version(model) == tokenizer_version(model)
    assert save_tokenizer(model, tmp_path / "a") == save_tokenizer(model, tmp_path / "b")
    torch.manual_seed(0)
    fresh_a, fresh_b = MRQVAE(tiny_config()), None
    torch.manual_seed(0)
    fresh_b = MRQVAE(tiny_config())
    assert tokenizer_version(fresh_a) == tokenizer_version(fresh_b)
    with torch.no_grad():
        fresh_b.codebooks["shared_1"].embedding[3, 0] += 1e-3
    assert tokenizer_version(fresh_a) != tokenizer_version(fresh_b)
    torch.manual_seed(0)
    assert tokenizer_version(MRQVAE(tiny_config(commitment_weight=0.5))) != tokenizer_version(fresh_a)


def test_mismatched_config_names_the_tensor(tmp_path: Path, model_and_data) -> None:
    model, _ = model_and_data
    save_tokenizer(model, tmp_path / "tok")
    config_path = tmp_path / "tok" / "config.json"
    payload = json.loads(config_path.read_text())
    payload["mrqvae"]["num_codes"] = 8
    config_path.write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match=r"tensor 'codebooks\.shared_1\.embedding' has shape \[16, 8\].*\[8, 8\]"):
        load_tokenizer(tmp_path / "tok")
    payload["mrqvae"]["num_codes"] = 16
    payload["mrqvae"]["specific_levels"] = 3
    config_path.write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match=r"tensor 'codebooks\.src_bill_5\.embedding' required by the config is missing"):
        load_tokenizer(tmp_path / "tok")


def test_tampered_weights_fail_the_version_check(tmp_path: Path, model_and_data) -> None:
    model, _ = model_and_data
    save_tokenizer(model, tmp_path / "tok")
    weights = tmp_path / "tok" / "model.safetensors"
    state = load_file(str(weights))
    state["codebooks.shared_1.embedding"][0, 0] += 1.0
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="does not match the content"):
        load_tokenizer(tmp_path / "tok")


def test_missing_files_and_bad_format(tmp_path: Path, model_and_data) -> None:
    model, _ = model_and_data
    with pytest.raises(CheckpointError, match="missing tokenizer config"):
        load_tokenizer(tmp_path / "nothing")
    save_tokenizer(model, tmp_path / "tok")
    (tmp_path / "tok" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing tokenizer weights"):
        load_tokenizer(tmp_path / "tok")
    save_tokenizer(model, tmp_path / "tok2")
    payload = json.loads((tmp_path / "tok2" / "config.json").read_text())
    payload["format_version"] = 99
    (tmp_path / "tok2" / "config.json").write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_tokenizer(tmp_path / "tok2")
    payload["format_version"] = 1
    payload["mrqvae"]["bogus"] = 1
    (tmp_path / "tok2" / "config.json").write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match=r"mrqvae: bogus: unknown key"):
        load_tokenizer(tmp_path / "tok2")


def test_uninitialised_flags_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MRQVAE(tiny_config())
    save_tokenizer(model, tmp_path / "fresh")
    loaded, _ = load_tokenizer(tmp_path / "fresh")
    assert loaded.uninitialized_codebooks() == model.uninitialized_codebooks() != []
