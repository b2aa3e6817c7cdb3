"""Tests of the U2QT-AAAI causal Q-Former encoder and reverse decoder (tiny sizes)."""

from __future__ import annotations

import pytest
import torch

from u2qt_core.encoders.qformer import (
    CausalQFormerEncoder,
    QFormerEncoderConfig,
    ReverseQFormerDecoder,
    masked_reconstruction_loss,
)
from u2qt_core.errors import InputError

DIMS = {"V": 6, "T": 3, "R": 5}


def tiny_config(**kw: object) -> QFormerEncoderConfig:
    base = dict(
        input_dims=DIMS,
        context_sources={"V": ["R"]},
        num_queries=2,
        qformer_layers=2,
        hidden=16,
        num_heads=2,
        dropout=0.0,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        ffn_mult=2,
        max_len=16,
        out_dim=12,
    )
    base.update(kw)
    return QFormerEncoderConfig(**base)


def batch(b: int = 3, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    lengths = {"V": 7, "T": 4, "R": 5}
    inputs = {s: torch.randn(b, t, DIMS[s], generator=g) for s, t in lengths.items()}
    masks = {s: torch.ones(b, t, dtype=torch.bool) for s, t in lengths.items()}
    masks["V"][0, 5:] = False
    masks["R"][1, 2:] = False
    return inputs, masks


def test_defaults_follow_the_paper() -> None:
    c = QFormerEncoderConfig(input_dims={"x": 4})
    assert (c.num_queries, c.qformer_layers, c.hidden, c.num_heads) == (4, 4, 512, 8)
    assert (c.dropout, c.encoder_layers, c.decoder_layers, c.d_model) == (0.1, 6, 6, 512)


def test_shapes() -> None:
    torch.manual_seed(0)
    enc = CausalQFormerEncoder(tiny_config()).eval()
    dec = ReverseQFormerDecoder(tiny_config()).eval()
    inputs, masks = batch()
    q = enc(inputs, masks)
    assert {s: tuple(v.shape) for s, v in q.items()} == {s: (3, 2, 16) for s in DIMS}
    pooled = enc.pooled(inputs, masks)
    assert {s: tuple(v.shape) for s, v in pooled.items()} == {s: (3, 12) for s in DIMS}
    for s in DIMS:
        assert tuple(dec(pooled[s], s, masks[s]).shape) == tuple(inputs[s].shape)


def test_padded_positions_do_not_change_outputs() -> None:
    torch.manual_seed(0)
    enc = CausalQFormerEncoder(tiny_config()).eval()
    inputs, masks = batch()
    with torch.no_grad():
        ref = enc.pooled(inputs, masks)
        noisy = {s: x.clone() for s, x in inputs.items()}
        noisy["V"][0, 5:] = 100.0
        noisy["R"][1, 2:] = -50.0
        got = enc.pooled(noisy, masks)
        # extra padding columns appended change nothing either
        longer = {s: torch.cat([x, torch.randn(3, 3, DIMS[s])], dim=1) for s, x in inputs.items()}
        longer_masks = {s: torch.cat([m, torch.zeros(3, 3, dtype=torch.bool)], dim=1) for s, m in masks.items()}
        got_longer = enc.pooled(longer, longer_masks)
    for s in DIMS:
        torch.testing.assert_close(got[s], ref[s], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_longer[s], ref[s], atol=1e-5, rtol=1e-5)


def test_fully_empty_source_row_is_finite() -> None:
    enc = CausalQFormerEncoder(tiny_config()).eval()
    inputs, masks = batch()
    masks["R"][2] = False
    with torch.no_grad():
        out = enc.pooled(inputs, masks)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_behaviour_stream_reads_search_but_tabular_does_not() -> None:
    torch.manual_seed(0)
    enc = CausalQFormerEncoder(tiny_config()).eval()
    inputs, masks = batch()
    changed = dict(inputs)
    changed["R"] = inputs["R"] + torch.randn_like(inputs["R"])
    with torch.no_grad():
        a, b = enc(inputs, masks), enc(changed, masks)
    assert not torch.allclose(a["V"], b["V"], atol=1e-4)
    torch.testing.assert_close(a["T"], b["T"])
    assert not torch.allclose(a["R"], b["R"], atol=1e-4)
    # without the context edge V no longer depends on R
    enc_nc = CausalQFormerEncoder(tiny_config(context_sources={})).eval()
    with torch.no_grad():
        torch.testing.assert_close(enc_nc(inputs, masks)["V"], enc_nc(changed, masks)["V"])


def test_bad_inputs_rejected() -> None:
    enc = CausalQFormerEncoder(tiny_config())
    inputs, masks = batch()
    with pytest.raises(InputError, match="unknown source"):
        enc({"Z": inputs["V"]}, {"Z": masks["V"]})
    with pytest.raises(InputError, match="expected"):
        enc({"V": inputs["T"]}, {"V": masks["T"]})


def test_reconstruction_loss_falls() -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    enc, dec = CausalQFormerEncoder(cfg), ReverseQFormerDecoder(cfg)
    opt = torch.optim.AdamW([*enc.parameters(), *dec.parameters()], lr=3e-3)
    inputs, masks = batch(b=8, seed=1)

    def loss_fn() -> torch.Tensor:
        pooled = enc.pooled(inputs, masks)
        return sum(masked_reconstruction_loss(dec(pooled[s], s, masks[s]), inputs[s], masks[s]) for s in DIMS)

    with torch.no_grad():
        first = loss_fn().item()
    for _ in range(40):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
