"""Quantization fidelity from the lean inference path: same codes as :meth:`MRQVAE.quantize`,
and the relative residual equals the full path's ``||r^{L+1}|| / ||z||``."""
from __future__ import annotations

import pytest
import torch

from tests.core import toy_mrqvae
from tests.core.test_mrqvae import warm_up
from u2qt_core.mrqvae import MRQVAE


@pytest.mark.parametrize("variant", ["multiview", "union"])
def test_quantize_measured_is_quantize_plus_the_relative_residual(variant: str) -> None:
    torch.manual_seed(0)
    data = toy_mrqvae.make_data(128, seed=5)
    model = warm_up(MRQVAE(toy_mrqvae.tiny_config(variant=variant, dead_code_window=10)), data, steps=20)
    for source in toy_mrqvae.SOURCES:
        codes, relative = model.quantize_measured(data[source], source)
        assert torch.equal(codes, model.quantize(data[source], source))
        _, _, norms = model.quantize_with_residuals(data[source], source)     # [B, L + 1]: ||r^1|| = ||z||
        torch.testing.assert_close(relative, norms[:, -1] / norms[:, 0], atol=1e-5, rtol=1e-4)
        assert relative.shape == (data[source].shape[0],)
        assert bool(((relative > 0) & (relative < 1)).all())   # the codes explain part, not all, of the latent


def test_a_zero_latent_has_zero_residual() -> None:
    torch.manual_seed(0)
    data = toy_mrqvae.make_data(64, seed=2)
    model = warm_up(MRQVAE(toy_mrqvae.tiny_config(dead_code_window=10)), data, steps=10)
    with torch.no_grad():
        for p in model.shared_encoder[-1].parameters():   # the latent's last layer: z = 0
            p.zero_()
    source = toy_mrqvae.SOURCES[0]
    _, relative = model.quantize_measured(data[source][:4], source)
    assert torch.equal(relative, torch.zeros(4))
