"""train_mrqvae: determinism, resume, divergence, input checks, metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from u2qt_core.checkpoint import load_tokenizer, tokenizer_version
from u2qt_core.config import ModelPreset, load_model_preset
from u2qt_core.errors import CheckpointError, InputError, TrainingDivergedError
from u2qt_core.mrqvae import MRQVAE
from tests.conftest import world_layout
from u2qt_core.training import allocate_batch, train_mrqvae


TINY = Path(__file__).resolve().parents[2] / "conf" / "model" / "tiny.yaml"


def tiny_preset(steps: int = 12, **train: object) -> ModelPreset:
    """conf/model/tiny.yaml narrowed to three small sources."""
    overrides = {
        "mrqvae": {
            "sources": ["bill", "spm", "tabular"],
            "input_dims": {"bill": 12, "spm": 12, "tabular": 5, "mini": None, "app": None, "search": None},
            "embed_dim": 12,
            "code_dim": 8,
        },
        "train": {"steps": steps, "batch_size": 48, "log_every": 4, "checkpoint_every": 0, **train},
    }
    return load_model_preset(TINY, overrides, layout=world_layout())


def make_embeddings(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for offset, (source, n, dim) in enumerate([("bill", 120, 12), ("spm", 60, 12), ("tabular", 120, 5)]):
        centres = rng.normal(size=(6, dim)) * 2 + offset
        out[source] = (centres[rng.integers(0, 6, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def trained() -> tuple:
    emb = make_embeddings()
    return train_mrqvae(emb, tiny_preset(steps=40), progress=False), emb


def test_training_history_and_metrics(trained: tuple) -> None:
    result, _ = trained
    assert result.steps == 40 and [h["step"] for h in result.history] == list(range(4, 41, 4))
    assert result.history[-1]["uninitialized_codebooks"] == 0
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    metrics = json.loads(json.dumps(result.metrics))  # JSON-serialisable
    assert [lv["level"] for lv in metrics["per_level"]] == [1, 2, 3, 4]
    assert set(metrics["per_codebook"]) == set(result.model.codebook_sizes())
    for entry in metrics["per_codebook"].values():
        assert 0 < entry["utilization"] <= 1 and entry["perplexity"] >= 1 and entry["initialized"]
    for source in ["bill", "spm", "tabular"]:
        stats = metrics["per_source"][source]
        assert 0 <= stats["collision_rate"] <= 1 and stats["recon_mse"] > 0 and -1 <= stats["recon_cosine"] <= 1
        assert len(stats["residual_norm"]) == 5
    norms = metrics["residual_norm"]
    assert all(b <= a + 1e-6 for a, b in zip(norms, norms[1:])), norms


def test_same_seed_same_tokenizer_other_seed_differs(trained: tuple) -> None:
    result, emb = trained
    again = train_mrqvae(emb, tiny_preset(steps=40), progress=False)
    assert tokenizer_version(again.model) == tokenizer_version(result.model)
    other = train_mrqvae(emb, tiny_preset(steps=40, seed=1), progress=False)
    assert tokenizer_version(other.model) != tokenizer_version(result.model)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    emb = make_embeddings()
    full = train_mrqvae(emb, tiny_preset(steps=12, checkpoint_every=6), out_dir=tmp_path / "full", progress=False)
    half = train_mrqvae(emb, tiny_preset(steps=6), out_dir=tmp_path / "split", progress=False)
    assert half.steps == 6
    resumed = train_mrqvae(
        emb, tiny_preset(steps=12, checkpoint_every=6), out_dir=tmp_path / "split", resume=True, progress=False
    )
    assert resumed.steps == 12
    # history carried over: the short run also logged its last step (6)
    assert [h["step"] for h in resumed.history] == [4, 6, 8, 12]
    assert [h for h in resumed.history if h["step"] != 6] == full.history
    assert tokenizer_version(resumed.model) == tokenizer_version(full.model)
    # the final tokenizer directory loads and matches
    model, version = load_tokenizer(tmp_path / "split" / "tokenizer")
    assert version == tokenizer_version(full.model)
    assert json.loads((tmp_path / "split" / "metrics.json").read_text())["tokenizer_version"] == version
    # resuming with another architecture is refused
    bigger = tiny_preset(steps=14)
    bigger = bigger.model_copy(update={"mrqvae": bigger.mrqvae.model_copy(update={"num_codes": 8})})
    with pytest.raises(CheckpointError, match=r"different mrqvae config \(keys: \['num_codes'\]\)"):
        train_mrqvae(emb, bigger, out_dir=tmp_path / "split", resume=True, progress=False)


def test_nan_loss_names_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    real = MRQVAE.forward_batch
    calls = {"n": 0}

    def poisoned(self: MRQVAE, batch: dict) -> dict:
        calls["n"] += 1
        outputs = real(self, batch)
        if calls["n"] == 3:
            out = outputs["bill"]
            out.loss = out.loss * float("nan")
        return outputs

    monkeypatch.setattr(MRQVAE, "forward_batch", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"^step 3: loss is nan"):
        train_mrqvae(make_embeddings(), tiny_preset(steps=5), progress=False)


def test_overflowing_inputs_diverge_at_step_one() -> None:
    emb = make_embeddings()
    # finite, but its squared error overflows (a text source: tabular features are standardised first)
    emb["bill"] = emb["bill"] * np.float32(1e30)
    with pytest.raises(TrainingDivergedError, match=r"^step 1: loss is (inf|nan)"):
        train_mrqvae(emb, tiny_preset(steps=3), progress=False)


def test_bad_inputs_raise_input_error() -> None:
    emb = make_embeddings()
    with pytest.raises(InputError, match="unknown source 'mail'"):
        train_mrqvae({**emb, "mail": emb["bill"]}, tiny_preset(), progress=False)
    with pytest.raises(InputError, match=r"source 'tabular': expected an array of shape \[N, 5\], got \[120, 12\]"):
        train_mrqvae({**emb, "tabular": emb["bill"]}, tiny_preset(), progress=False)
    bad = emb["spm"].copy()
    bad[7, 0] = np.nan
    with pytest.raises(InputError, match=r"source 'spm': non-finite value .* row 7"):
        train_mrqvae({**emb, "spm": bad}, tiny_preset(), progress=False)
    with pytest.raises(InputError, match="no training rows"):
        train_mrqvae({"bill": emb["bill"][:0]}, tiny_preset(), progress=False)


def test_missing_source_is_trained_around(caplog: pytest.LogCaptureFixture) -> None:
    emb = make_embeddings()
    del emb["spm"]
    with caplog.at_level(logging.WARNING, logger="u2qt_core.training"):
        result = train_mrqvae(emb, tiny_preset(steps=8), progress=False)
    assert "no rows for sources ['spm']" in caplog.text
    assert set(result.model.uninitialized_codebooks()) == {"spm.3", "spm.4"}
    assert "spm" not in result.metrics["per_source"]


def test_short_training_still_initialises_every_codebook() -> None:
    # 2 steps are too few to fill every k-means buffer; the end-of-training pass completes them
    result = train_mrqvae(make_embeddings(), tiny_preset(steps=2), progress=False)
    assert result.model.uninitialized_codebooks() == []


def test_allocate_batch() -> None:
    assert allocate_batch(10, {"a": 50, "b": 30, "c": 20}) == {"a": 5, "b": 3, "c": 2}
    assert allocate_batch(10, {"a": 1000, "b": 1, "c": 0}) == {"a": 9, "b": 1}
    alloc = allocate_batch(7, {"a": 1, "b": 1, "c": 1})
    assert sum(alloc.values()) == 7 and min(alloc.values()) >= 2
    assert allocate_batch(2, {"a": 5, "b": 5, "c": 5}) == {"a": 1, "b": 1, "c": 1}
