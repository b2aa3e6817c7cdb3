"""The U²QT-AAAI tokenizer in PyTorch alone: trained end to end from a preset, saved as a bundle
whose version covers the front end, reloaded with equal codes, and causal in its context."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from u2qt_core.bundle import architecture_of, load_bundle, write_bundle
from u2qt_core.config import SourceLayout, load_model_preset
from u2qt_core.errors import ConfigError
from u2qt_core.u2qt_model import U2QTTokenizer
from u2qt_core.u2qt_training import SequenceSample, train_u2qt

REPO = Path(__file__).resolve().parents[2]
SMALL = REPO / "conf" / "model" / "u2qt_aaai_small.yaml"
TEXT_DIM = 8
# "view" reads "query" (the paper's V reads R); "query" and the tabular "profile" read themselves
LAYOUT = SourceLayout(["view", "query", "profile"], {"view": TEXT_DIM, "query": TEXT_DIM, "profile": 5},
                      ["profile"], TEXT_DIM, {"view": ["query"]})


def preset(**train):
    return load_model_preset(SMALL, {"train": {"steps": 30, **train}}, layout=LAYOUT)


def sample(n: int = 64, seed: int = 0) -> SequenceSample:
    """``n`` user-days: 1-6 lines per text source (query absent on every fifth), 5 features."""
    rng = np.random.default_rng(seed)
    days = []
    for i in range(n):
        day = {"view": rng.normal(size=(rng.integers(1, 7), TEXT_DIM)), "profile": rng.normal(size=(5, 1))}
        if i % 5:
            day["query"] = rng.normal(size=(rng.integers(1, 7), TEXT_DIM))
        days.append(day)
    return SequenceSample.from_user_days(days, load_model_preset(SMALL, layout=LAYOUT).u2qt.input_dims)


@pytest.fixture(scope="module")
def trained():
    return train_u2qt(sample(), preset(), progress=False)


def codes_of(model: U2QTTokenizer, data: SequenceSample) -> dict[str, np.ndarray]:
    batch = data.batch(np.arange(len(data)), model.frontend_config.max_len)
    return {s: c.numpy() for s, (c, _) in model.quantize_measured(batch).items()}


def test_the_preset_takes_its_sources_from_the_layout():
    p = load_model_preset(SMALL, layout=LAYOUT)
    assert p.architecture == "u2qt_aaai"
    assert p.u2qt.input_dims == {"view": TEXT_DIM, "query": TEXT_DIM, "profile": 1}   # features read one by one
    assert p.u2qt.context_sources == {"view": ["query"]}
    assert p.mrqvae.input_dims == {s: p.u2qt.pooled_dim for s in LAYOUT.sources} and p.mrqvae.tabular_sources == []
    bad = SourceLayout(LAYOUT.sources, LAYOUT.input_dims, LAYOUT.tabular_sources, TEXT_DIM, {"view": ["nope"]})
    with pytest.raises(ConfigError, match="context_sources.view"):
        load_model_preset(SMALL, layout=bad)


def test_training_runs_end_to_end_and_every_present_source_gets_codes(trained):
    history = trained.history
    assert history and all(np.isfinite(h["loss"]) for h in history)
    assert history[-1]["uninitialized_codebooks"] == 0 or not trained.model.mrqvae.uninitialized_codebooks()
    data = sample(20, seed=1)
    codes = codes_of(trained.model, data)
    present = np.diff(data.offsets["query"]) > 0
    assert (codes["query"][present] >= 0).all() and (codes["query"][~present] == -1).all()
    assert (codes["view"] >= 0).all() and codes["view"].shape == (20, trained.model.config.num_levels)


def test_the_bundle_version_covers_the_front_end_and_reloads_equal(trained, tmp_path):
    contract = {"encoder": {"model": "test"}}
    version, folder = write_bundle(trained.model, tmp_path, contract)
    model, loaded_version, stored = load_bundle(folder)
    assert loaded_version == version and architecture_of(stored) == "u2qt_aaai"
    assert isinstance(model, U2QTTokenizer)
    data = sample(16, seed=2)
    for source, codes in codes_of(trained.model, data).items():
        np.testing.assert_array_equal(codes_of(model, data)[source], codes)
    with torch.no_grad():   # the same MRQ-VAE with another front end is another version
        model.frontend.queries.add_(0.5)
    assert write_bundle(model, tmp_path, contract)[0] != version


def test_a_source_reads_its_context_never_the_reverse(trained):
    model, data = trained.model, sample(32, seed=3)
    other = sample(32, seed=4)
    swapped = SequenceSample({**data.values, "query": other.values["query"]},
                             {**data.offsets, "query": other.offsets["query"]})
    before, after = codes_of(model, data), codes_of(model, swapped)
    np.testing.assert_array_equal(before["profile"], after["profile"])   # reads only itself
    max_len = model.frontend_config.max_len
    with torch.no_grad():
        pooled_before = model.pooled(data.batch(np.arange(32), max_len))
        pooled_after = model.pooled(swapped.batch(np.arange(32), max_len))
    assert not torch.allclose(pooled_before["view"], pooled_after["view"])   # view reads query
    assert (before["view"] != after["view"]).any()
    # query does not read view: changing view leaves query's codes as they are
    view_swapped = SequenceSample({**data.values, "view": other.values["view"]}, {**data.offsets, "view": other.offsets["view"]})
    np.testing.assert_array_equal(codes_of(model, view_swapped)["query"], before["query"])
