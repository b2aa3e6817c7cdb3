"""Tests of the multi-scale alignment pretext tasks (FOUNDv2 section 4.3)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from u2qt_core.alignment import (  # noqa: E402
    AlignmentConfig,
    AlignmentTrainer,
    LoraSettings,
    UserSequenceConfig,
    UserSequenceModel,
    UserTokenHistories,
    describe,
    describe_future_behaviour,
    info_nce,
    periodic_window_pairs,
    semantic_alignment_loss,
    token_alignment_loss,
    token_position_weights,
    window_alignment_loss,
)
from u2qt_core.config import load_model_preset  # noqa: E402
from u2qt_core.errors import InputError  # noqa: E402
from u2qt_core.mrqvae import MRQVAE  # noqa: E402
from tests.conftest import world_layout  # noqa: E402

TINY_PRESET = Path(__file__).resolve().parents[2] / "conf" / "model" / "tiny.yaml"
ITEMS = [["coffee", "tea"], ["train tickets"], ["groceries"], ["books", "pens"],
         ["game credits"], ["flowers"], ["medicine"], ["shoes", "a jacket"]]


# ------------------------------------------------------------------------------------ losses
def test_token_weights_match_formula() -> None:
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    w = token_position_weights(mask, tau_t=4.0)
    expected = torch.tensor([[1 + 1 / 4, 1 + 2 / 4, 1 + 3 / 4, 0.0], [1.25, 1.5, 1.75, 2.0]])
    torch.testing.assert_close(w, expected)
    with pytest.raises(InputError):
        token_position_weights(mask, tau_t=0.0)


def test_token_loss_hand_computation_and_masking() -> None:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 4, 5, generator=g)
    targets = torch.randn(2, 4, 5, generator=g)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    tau = 3.0
    num = den = 0.0
    for b in range(2):
        for k in range(3):  # pair (k, k+1), 0-based; weight uses 1-based k
            if mask[b, k] and mask[b, k + 1]:
                w = 1 + (k + 1) / tau
                cos = torch.nn.functional.cosine_similarity(hidden[b, k], targets[b, k + 1], dim=0)
                num += w * (1 - cos.item())
                den += w
    loss = token_alignment_loss(hidden, targets, mask, tau)
    assert math.isclose(loss.item(), num / den, rel_tol=1e-5)
    # masked positions do not contribute
    h2, t2 = hidden.clone(), targets.clone()
    h2[0, 3] = 99.0
    t2[0, 3] = -7.0
    assert math.isclose(token_alignment_loss(h2, t2, mask, tau).item(), loss.item(), rel_tol=1e-6)
    # perfect predictions -> 0; targets get no gradient
    perfect = torch.cat([targets[:, 1:], targets[:, :1]], dim=1)
    assert token_alignment_loss(perfect, targets, mask, tau).item() == pytest.approx(0.0, abs=1e-6)
    t3 = targets.clone().requires_grad_(True)
    token_alignment_loss(hidden.requires_grad_(True), t3, mask, tau).backward()
    assert t3.grad is None


def test_info_nce_matches_3x3_hand_computation() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    tau = 0.5
    an = a / a.norm(dim=1, keepdim=True)
    bn = b / b.norm(dim=1, keepdim=True)
    s = [[float(an[i] @ bn[j]) for j in range(3)] for i in range(3)]
    hand = -sum(math.log(math.exp(s[i][i] / tau) / sum(math.exp(s[i][j] / tau) for j in range(3))) for i in range(3)) / 3
    assert info_nce(a, b, tau).item() == pytest.approx(hand, rel=1e-6)
    assert window_alignment_loss(a, b, tau).item() == pytest.approx(hand, rel=1e-6)
    assert semantic_alignment_loss(a, b, tau).item() == pytest.approx(hand, rel=1e-6)
    sym = info_nce(a, b, tau, symmetric=True).item()
    assert sym == pytest.approx(0.5 * (hand + info_nce(b, a, tau).item()), rel=1e-6)


# ------------------------------------------------------------------------- windows / templates
def test_periodic_window_pairs_same_weekday_other_week() -> None:
    days = torch.tensor([[0, 1, 7, 8, 14, 3], [0, 1, 2, 3, 4, 5]])
    mask = torch.tensor([[True, True, True, True, True, False], [True] * 6])
    rng = np.random.default_rng(0)
    for _ in range(20):
        pairs = periodic_window_pairs(days, mask, period=7, generator=rng)
        assert pairs.valid.tolist() == [True, False]
        da, db = days[0][pairs.a[0]], days[0][pairs.b[0]]
        assert da.numel() == 1 and db.numel() == 1
        assert int(da) % 7 == int(db) % 7 and int(da) != int(db)
        assert not pairs.a[1].any() and not pairs.b[1].any()
    weeks = periodic_window_pairs(days, mask, period=7, window_days=7, generator=rng)
    assert set((days[0][weeks.a[0]] // 7).tolist()) != set((days[0][weeks.b[0]] // 7).tolist())
    with pytest.raises(InputError):
        periodic_window_pairs(days, mask, period=7, window_days=3)


def test_description_templates() -> None:
    assert (
        describe_future_behaviour(["coffee", "a train ticket"], 437.5, "successful")
        == "The user purchased coffee and a train ticket amounting more than 400 dollars with successful payment."
    )
    template = "The user searched for {items} more than {num} times with {status} intent."
    assert describe(template, "cheap flights", 12, "travel").startswith("The user searched for cheap flights more than 10")
    with pytest.raises(InputError, match="unknown field"):
        describe("The user {did} {items}", "x", 1, "y")


# ------------------------------------------------------------------------------------- model
def test_model_ignores_padding_and_is_causal() -> None:
    torch.manual_seed(0)
    cfg = UserSequenceConfig(code_dim=6, num_sources=2, num_levels=3, d_model=16, num_layers=2, num_heads=2, dropout=0.0,
                             pooling="per_source")
    model = UserSequenceModel(cfg).eval()
    vecs = torch.randn(2, 4, 3, 6)
    src = torch.tensor([[0, 1, 0, 1], [1, 1, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    with torch.no_grad():
        ref = model(vecs, src, mask)
        # padding moved to the front, garbage in the padded step: same fused embedding
        v2 = torch.cat([torch.full((2, 1, 3, 6), 50.0), vecs], dim=1)
        s2 = torch.cat([torch.zeros(2, 1, dtype=torch.long), src], dim=1)
        m2 = torch.cat([torch.zeros(2, 1, dtype=torch.bool), mask], dim=1)
        moved = model(v2, s2, m2)
        torch.testing.assert_close(moved.fused, ref.fused, atol=1e-5, rtol=1e-5)
        # per-source pooling: one d_model block per source; a row without source 0 has zeros there
        assert ref.fused.shape == (2, 2 * 16) and ref.projected.shape == (2, 16)
        token_src = src.repeat_interleave(3, dim=1)  # steps are already packed left here
        for row in range(2):
            for k in range(2):
                sel = ref.token_mask[row] & (token_src[row] == k)
                torch.testing.assert_close(ref.fused[row, 16 * k : 16 * (k + 1)], ref.hidden[row][sel].mean(dim=0))
        no_source0 = model(vecs, torch.ones_like(src), mask).fused
        assert torch.count_nonzero(no_source0[:, :16]) == 0 and torch.count_nonzero(no_source0[:, 16:]) > 0
        # with codes: each source's block is followed by the mean over its steps of sum_l T(z_l)
        with_codes = UserSequenceModel(cfg.model_copy(update={"pooling": "per_source_with_codes"})).eval()
        fused = with_codes(vecs, src, mask).fused
        assert fused.shape == (2, 2 * (16 + 6))
        torch.testing.assert_close(fused[0, 32:38], vecs[0, [0, 2]].sum(dim=1).mean(dim=0))   # row 0, source 0
        torch.testing.assert_close(fused[1, 38:44], vecs[1, [0, 1]].sum(dim=1).mean(dim=0))   # row 1, source 1
        # codes with summary: the same code blocks, then the projection the losses see
        summary_out = UserSequenceModel(cfg.model_copy(update={"pooling": "codes_with_summary"})).eval()(vecs, src, mask)
        assert summary_out.fused.shape == (2, 2 * 6 + 16)
        torch.testing.assert_close(summary_out.fused[:, :12], fused[:, 32:])
        torch.testing.assert_close(summary_out.fused[:, 12:], summary_out.projected)
        # causal: changing the last real step leaves earlier hidden states unchanged
        v3 = vecs.clone()
        v3[0, 2] += 1.0
        changed = model(v3, src, mask)
    assert ref.hidden.shape == (2, 12, 16) and ref.predictions.shape == (2, 12, 6)
    assert ref.token_mask.tolist()[0] == [True] * 9 + [False] * 3
    torch.testing.assert_close(changed.hidden[0, :6], ref.hidden[0, :6])
    assert not torch.allclose(changed.hidden[0, 6:9], ref.hidden[0, 6:9])
    assert torch.isfinite(ref.hidden).all()


# ------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tokenizer() -> MRQVAE:
    torch.manual_seed(0)
    return MRQVAE(load_model_preset(TINY_PRESET, layout=world_layout()).mrqvae).eval()


def synthetic_histories(num_users: int = 48, weeks: int = 3, seed: int = 0) -> tuple[UserTokenHistories, np.ndarray]:
    """Each user repeats a personal weekly pattern of bill/search tokens (10% noise); the first
    shared-level code of every bill step is the user's spending category (0..7)."""
    rng = np.random.default_rng(seed)
    sources = ["bill", "search"]
    levels, codes_per_level = 4, 16
    category = rng.integers(0, len(ITEMS), size=num_users)
    steps = weeks * 7 * len(sources)
    codes = np.zeros((num_users, steps, levels), dtype=np.int64)
    source_ids = np.zeros((num_users, steps), dtype=np.int64)
    day = np.zeros((num_users, steps), dtype=np.int64)
    mask = np.ones((num_users, steps), dtype=bool)
    for u in range(num_users):
        pattern = rng.integers(0, codes_per_level, size=(7, len(sources), levels))
        pattern[:, 0, 0] = category[u]
        s = 0
        for d in range(weeks * 7):
            for k in range(len(sources)):
                tok = pattern[d % 7, k].copy()
                noise = rng.random(levels) < 0.1
                tok[noise] = rng.integers(0, codes_per_level, size=int(noise.sum()))
                codes[u, s], source_ids[u, s], day[u, s] = tok, k, d
                s += 1
        drop = int(rng.integers(0, 4))  # ragged histories: pad the last few steps
        if drop:
            mask[u, steps - drop :] = False
    histories = UserTokenHistories(
        torch.from_numpy(codes), torch.from_numpy(source_ids), torch.from_numpy(day), torch.from_numpy(mask), sources
    )
    return histories, category


def small_config(**kw: object) -> AlignmentConfig:
    base = dict(d_model=32, num_layers=2, num_heads=2, dropout=0.0, batch_size=16, lr=3e-3, steps=60,
                seed=0, device="cpu", tau_t=20.0, tau_w=0.2, tau_s=0.2, log_every=20)
    base.update(kw)
    return AlignmentConfig(**base)


def test_each_alignment_loss_falls(tokenizer: MRQVAE) -> None:
    histories, category = synthetic_histories()
    g = torch.Generator().manual_seed(1)
    category_text = torch.randn(len(ITEMS), 24, generator=g)  # stand-in description embeddings
    trainer = AlignmentTrainer(
        tokenizer, histories, small_config(steps=100), text_embeddings=category_text[category]
    )
    before = trainer.evaluate()
    history = trainer.fit()
    after = trainer.evaluate()
    assert len(history) == 100 and set(history[-1]) == {"token", "window", "semantic", "total"}
    # measured over seeds 0-2: token falls to ~0.77x (next-token copying from a week earlier
    # needs longer), window to 0.45-0.61x, semantic to ~0.37x
    limits = {"token": 0.85, "window": 0.75, "semantic": 0.6, "total": 0.65}
    for name, limit in limits.items():
        assert after[name] < limit * before[name], (name, before, after)
    emb = trainer.embed_users()
    assert emb.shape == (48, len(histories.sources) * trainer.model.config.code_dim + 32) and emb.dtype == np.float32 and np.isfinite(emb).all()
    np.testing.assert_allclose(trainer.embed_users(histories.select(range(5))), emb[:5], atol=1e-5)


def test_training_is_seeded(tokenizer: MRQVAE) -> None:
    histories, _ = synthetic_histories(num_users=12, weeks=2)
    runs = [AlignmentTrainer(tokenizer, histories, small_config(batch_size=8, lambda_semantic=0.0)).fit(3) for _ in range(2)]
    assert runs[0] == runs[1]


def test_bad_histories_rejected() -> None:
    with pytest.raises(InputError, match="source_ids"):
        UserTokenHistories(
            torch.zeros(2, 3, 4, dtype=torch.long), torch.full((2, 3), 5), torch.zeros(2, 3, dtype=torch.long),
            torch.ones(2, 3, dtype=torch.bool), ["bill"],
        )


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft on transformers 5
def test_descriptions_through_text_encoder_and_lora(tokenizer: MRQVAE) -> None:
    """Descriptions embedded by MiniLM (frozen), then with LoRA adapters that train."""
    from u2qt_core.encoders.text import TextEncoderConfig

    histories, category = synthetic_histories(num_users=8, weeks=2)
    texts = [describe_future_behaviour(ITEMS[c], 50 + 10 * c, "successful") for c in category]
    text_cfg = TextEncoderConfig(device="cpu", max_length=32)
    frozen = AlignmentTrainer(tokenizer, histories, small_config(batch_size=8), descriptions=texts, text_encoder=text_cfg)
    assert frozen.text_embeddings is not None and frozen.text_embeddings.shape == (8, 384)
    assert "semantic" in frozen.fit(2)[-1]

    lora = AlignmentTrainer(
        tokenizer, histories, small_config(batch_size=8, lora=LoraSettings(enabled=True, r=2)),
        descriptions=texts, text_encoder=text_cfg,
    )
    assert lora.description_encoder is not None
    trainable = {n: p.detach().clone() for n, p in lora.description_encoder.named_parameters() if p.requires_grad}
    frozen_params = {n: p.detach().clone() for n, p in lora.description_encoder.named_parameters() if not p.requires_grad}
    assert trainable and all("lora" in n for n in trainable)
    record = lora.fit(2)[-1]
    assert math.isfinite(record["semantic"])
    after = dict(lora.description_encoder.named_parameters())
    assert any(not torch.equal(after[n], p) for n, p in trainable.items() if "lora_B" in n)
    assert all(torch.equal(after[n], p) for n, p in frozen_params.items())
