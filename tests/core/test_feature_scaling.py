"""Tabular features standardised inside the MRQ-VAE (issue 25 item 4): fitted on the training
rows, stored and hashed with the weights, the loss on the standardised features, and tokenizers
saved before ``tabular_standardize`` loading as they were."""

from __future__ import annotations

import json

import numpy as np
import torch

from tests.core import toy_mrqvae
from tests.core.test_training import make_embeddings, tiny_preset
from u2qt_core.checkpoint import canonical_config_json, load_tokenizer, save_tokenizer, tokenizer_version
from u2qt_core.feature_scaling import FeatureScaler
from u2qt_core.metrics import codebook_metrics
from u2qt_core.mrqvae import MRQVAE
from u2qt_core.training import train_mrqvae


def test_scaler_standardises_and_inverts_and_leaves_constant_features_alone() -> None:
    x = torch.tensor([[1.0, 5.0, 100.0], [3.0, 5.0, 300.0], [5.0, 5.0, 200.0]])
    scaler = FeatureScaler(3)
    torch.testing.assert_close(scaler(x), x)                      # identity until fitted
    scaler.fit(x)
    z = scaler(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.tensor([1.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    assert float(scaler.std[1]) == 1.0                            # constant column: std 1, not 0
    torch.testing.assert_close(scaler.inverse(z), x)


def test_training_fits_the_scaler_on_the_training_rows_and_the_loss_weighs_features_alike() -> None:
    emb = make_embeddings()
    emb["tabular"][:, 0] *= 100.0                                 # one feature 100x wider than the rest
    model = train_mrqvae(emb, tiny_preset(steps=8), progress=False).model
    assert model.config.tabular_standardize                      # the default
    scaler = model.tabular_scalers["tabular"]
    np.testing.assert_allclose(scaler.mean.numpy(), emb["tabular"].mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaler.std.numpy(), emb["tabular"].std(0), rtol=1e-5)
    assert set(model.tabular_scalers) == {"tabular"}             # text sources are not rescaled
    x = torch.from_numpy(emb["tabular"])
    out = model(x, "tabular")
    # loss on the standardised features; the reconstruction given back in raw units
    expected = torch.nn.functional.mse_loss(scaler(out.reconstruction), scaler(x))
    torch.testing.assert_close(out.recon_loss, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.reconstruct(out.codes, "tabular"), out.reconstruction, atol=1e-3, rtol=1e-4)
    # the reconstruction metrics (promotion gates, training summary) stay in raw units
    raw_mse = float(((model.reconstruct(model.quantize(x, "tabular"), "tabular") - x) ** 2).mean())
    metric = codebook_metrics(model, emb)["per_source"]["tabular"]["recon_mse"]
    assert abs(metric - raw_mse) <= 1e-4 * raw_mse


def test_scaler_is_saved_with_the_weights_and_changes_the_version(tmp_path) -> None:
    emb = make_embeddings()
    model = train_mrqvae(emb, tiny_preset(steps=8), progress=False).model
    version = save_tokenizer(model, tmp_path / "tok")
    loaded, loaded_version = load_tokenizer(tmp_path / "tok")
    assert loaded_version == version and loaded.config.tabular_standardize
    torch.testing.assert_close(loaded.tabular_scalers["tabular"].std, model.tabular_scalers["tabular"].std)
    x = torch.from_numpy(emb["tabular"])
    assert torch.equal(loaded.quantize(x, "tabular"), model.quantize(x, "tabular"))
    other = MRQVAE(model.config)
    other.load_state_dict(model.state_dict())
    other.tabular_scalers["tabular"].std.mul_(2.0)                # same weights, other statistics
    assert tokenizer_version(other) != tokenizer_version(model)


def test_tokenizers_saved_before_the_key_load_unscaled_with_their_old_version(tmp_path) -> None:
    torch.manual_seed(0)
    model = MRQVAE(toy_mrqvae.tiny_config(tabular_standardize=False))
    assert len(model.tabular_scalers) == 0 and not any("scaler" in k for k in model.state_dict())
    assert "tabular_standardize" not in canonical_config_json(model.config)     # old configs hash as before
    version = save_tokenizer(model, tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    payload = json.loads(path.read_text())
    del payload["mrqvae"]["tabular_standardize"]                 # a config.json written before the key
    path.write_text(json.dumps(payload))
    loaded, loaded_version = load_tokenizer(tmp_path / "old")
    assert loaded_version == version and not loaded.config.tabular_standardize
    x = toy_mrqvae.make_data()["tabular"]
    assert torch.equal(loaded.quantize(x, "tabular"), model.quantize(x, "tabular"))
