"""Token-budget batching of the text encoder: length buckets, and vectors that do not depend on
which texts share a batch (CPU; the GPU tolerance is not measured here)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from u2qt_core.encoders.text import TextEncoder, TextEncoderConfig, length_bucket

WORDS = "paid electricity bill transfer coffee shop grocery taxi ride movie ticket phone top up rent gym".split()


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(TextEncoderConfig(device="cpu", max_batch_tokens=512, pad_to_multiple_of=8))


def _texts(n: int, seed: int = 0, longest: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, longest))) for _ in range(n)]


def test_plan_never_mixes_buckets_and_keeps_the_token_budget(encoder: TextEncoder) -> None:
    lengths = [3, 9, 17, 130, 64, 8, 16, 250, 1, 33] * 7
    plan = encoder.plan_batches(lengths)
    seen = sorted(i for rows, _ in plan for i in rows)
    assert seen == list(range(len(lengths)))
    for rows, width in plan:
        assert {length_bucket(lengths[i], 8) for i in rows} == {width}
        assert len(rows) * width <= 512 or len(rows) == 1
    widths = [w for _, w in plan]
    assert widths == sorted(widths, reverse=True)  # longest first: memory peaks at the start


def test_vectors_do_not_depend_on_batch_mates(encoder: TextEncoder) -> None:
    texts = _texts(24)
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([t])[0] for t in texts[:6]])
    assert np.array_equal(alone, together[:6])  # bit-identical, not merely close
    order = list(range(len(texts)))
    random.Random(1).shuffle(order)
    shuffled = encoder.encode([texts[i] for i in order])
    assert np.array_equal(shuffled[np.argsort(order)], together)
    mixed = encoder.encode(texts[:5] + _texts(12, seed=9))
    assert np.array_equal(mixed[:5], together[:5])


def test_token_budget_or_rows_give_the_same_vectors(encoder: TextEncoder) -> None:
    texts = _texts(16, seed=3)
    by_rows = TextEncoder(TextEncoderConfig(device="cpu", batch_size=5)).encode(texts)
    assert np.array_equal(by_rows, encoder.encode(texts))


def test_int8_dynamic_encoder_is_close_to_fp32(encoder: TextEncoder) -> None:
    import torch

    int8 = TextEncoder(TextEncoderConfig(device="cpu", max_batch_tokens=512, int8_dynamic=True))
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in int8.model.modules())
    texts = _texts(8, seed=5)
    cosine = (int8.encode(texts) * encoder.encode(texts)).sum(axis=1)
    assert cosine.min() > 0.9 and not np.array_equal(int8.encode(texts), encoder.encode(texts))
