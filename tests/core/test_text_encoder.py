"""Tests of u2qt_core.encoders.text (offline: MiniLM from its package, a tiny random Qwen3)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from u2qt_core.encoders.text import (  # noqa: E402
    TextEncoder,
    TextEncoderConfig,
    get_text_encoder,
    last_token_pool,
    minilm_model_path,
)
from u2qt_core.errors import ConfigError, InputError  # noqa: E402

INSTRUCTION = "extract features of payment bills"
WORDS = (
    "instruct extract features of payment bills query the user paid for coffee and a train "
    "ticket bought groceries at market opened game app searched cheap flights to paris"
).split()


# ---------------------------------------------------------------------------------- MiniLM
@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return get_text_encoder(TextEncoderConfig(device="cpu", batch_size=4))


def test_minilm_path_found_through_package() -> None:
    folder = minilm_model_path()
    assert (folder / "config.json").is_file()
    assert folder.name == "model"


def test_minilm_shapes_norms_and_similarity(minilm: TextEncoder) -> None:
    texts = [
        "The user paid for coffee at a cafe.",
        "A coffee was bought at the coffee shop.",
        "Searched for cheap flights to Paris.",
    ]
    vecs = minilm.encode(texts)
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert sims[0, 1] > sims[1, 2] + 0.2


def test_minilm_order_preserved_under_length_sorting(minilm: TextEncoder) -> None:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(n))) for n in rng.integers(1, 30, size=11)]
    batched = minilm.encode(texts)
    single = np.stack([minilm.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_truncation_is_counted_per_text(minilm: TextEncoder) -> None:
    """encode_counted: a text's tokens before truncation and what max_length cut from it (the
    window keeps the start of the text); the vectors are encode()'s."""
    short, long_text = "paid for coffee", " ".join(WORDS * 20)
    encoded = minilm.encode_counted([short, long_text])
    whole = [len(minilm.tokenizer(t, add_special_tokens=True)["input_ids"]) for t in (short, long_text)]
    limit = minilm.config.max_length
    assert whole[1] > limit
    assert encoded.tokens.tolist() == whole and encoded.tokens_cut.tolist() == [0, whole[1] - limit]
    assert np.array_equal(encoded.vectors, minilm.encode([short, long_text]))
    head = minilm.tokenizer.decode(minilm.tokenizer(long_text, truncation=True, max_length=limit)["input_ids"][1:-1])
    assert long_text.startswith(head)                  # what is kept is the start of the document


def test_get_text_encoder_caches_per_config(minilm: TextEncoder) -> None:
    assert get_text_encoder(TextEncoderConfig(device="cpu", batch_size=4)) is minilm


def test_empty_and_non_string_texts_rejected(minilm: TextEncoder) -> None:
    with pytest.raises(InputError, match="index 1"):
        minilm.encode(["fine", "   "])
    with pytest.raises(InputError, match="index 0"):
        minilm.encode([None, "fine"])  # type: ignore[list-item]
    assert minilm.encode([]).shape == (0, 384)


def test_missing_model_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="nope"):
        TextEncoder(TextEncoderConfig(model_path=str(missing)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        TextEncoder(TextEncoderConfig(model_path=str(tmp_path / "empty")))


def test_config_forbids_unknown_fields() -> None:
    with pytest.raises(Exception):
        TextEncoderConfig(poolng="mean")  # type: ignore[call-arg]


# ---------------------------------------------------------------------------------- Qwen3
@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Qwen3 + a word-level tokenizer with <pad>/<eos>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    folder = tmp_path_factory.mktemp("tiny_qwen3")
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, ":": 3}
    for word in WORDS + ["Instruct", "Query"]:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
    )
    Qwen3Model(config).eval().save_pretrained(folder)
    return folder


def _hand_last_token(folder: Path, prompt: str) -> np.ndarray:
    """Run the saved model on one un-padded prompt (+ <eos>) and take the last hidden state."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    ids = tok(prompt)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    return torch.nn.functional.normalize(hidden, dim=-1).numpy()


def test_qwen3_last_token_matches_hand_computation(tiny_qwen3: Path) -> None:
    enc = TextEncoder(
        TextEncoderConfig(
            model_path=str(tiny_qwen3), pooling="last_token", instruction=INSTRUCTION, device="cpu"
        )
    )
    assert enc.dim == 32
    assert enc.tokenizer.padding_side == "left"
    text = "the user paid for coffee"
    got = enc.encode([text])[0]
    # the instruction prompt was applied (and [EOS] appended)
    ids = enc._tokenize([text], INSTRUCTION)[0][0]
    expected_ids = enc.tokenizer(f"Instruct: {INSTRUCTION}\nQuery:{text}")["input_ids"]
    assert ids == expected_ids + [enc.tokenizer.eos_token_id]
    np.testing.assert_allclose(
        got, _hand_last_token(tiny_qwen3, f"Instruct: {INSTRUCTION}\nQuery:{text}"), atol=1e-5
    )
    # a different per-call instruction changes the vector; no instruction is the bare text
    other = enc.encode([text], instruction="opened game app")[0]
    assert not np.allclose(other, got, atol=1e-4)
    enc_bare = TextEncoder(
        TextEncoderConfig(model_path=str(tiny_qwen3), pooling="last_token", device="cpu")
    )
    np.testing.assert_allclose(enc_bare.encode([text])[0], _hand_last_token(tiny_qwen3, text), atol=1e-5)


def test_qwen3_left_padded_batch_equals_one_by_one(tiny_qwen3: Path) -> None:
    enc = TextEncoder(
        TextEncoderConfig(
            model_path=str(tiny_qwen3),
            pooling="last_token",
            instruction=INSTRUCTION,
            device="cpu",
            batch_size=8,
        )
    )
    texts = [
        "coffee",
        "the user paid for coffee and a train ticket",
        "searched cheap flights to paris",
        "bought groceries at market and opened game app and paid for coffee",
    ]
    batched = enc.encode(texts)
    single = np.stack([enc.encode([t])[0] for t in texts])
    assert np.isfinite(batched).all()
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_last_token_pool_left_and_right_padding() -> None:
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert last_token_pool(hidden, left).flatten().tolist() == [3.0, 7.0]
    assert last_token_pool(hidden, right).flatten().tolist() == [1.0, 7.0]


# ------------------------------------------------------------- Qwen3-Embedding's special tokens
@pytest.fixture(scope="module")
def qwen3_embedding_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3 with a tokenizer carrying Qwen3-Embedding-0.6B's documented special
    tokens, built offline: byte-level BPE, ``eos_token`` ``<|im_end|>``, ``pad_token``
    ``<|endoftext|>``, no bos/unk, and a TemplateProcessing post-processor that appends
    ``<|endoftext|>`` to every sequence (its tokenizer.json). Ids differ from the real
    vocabulary (151643..151645); the roles and the post-processor are the ones that matter."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    folder = tmp_path_factory.mktemp("qwen3_embedding_like")
    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    eot = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0", pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", eot)],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left", model_max_length=131072)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=64,
                         max_position_embeddings=256, pad_token_id=eot,
                         eos_token_id=tok.token_to_id("<|im_end|>"))
    Qwen3Model(config).eval().save_pretrained(folder)
    return folder


def test_qwen3_embedding_pools_its_own_endoftext_token(qwen3_embedding_like: Path) -> None:
    """QwenLM/Qwen3-Embedding#122: the tokenizer appends <|endoftext|> itself; nothing (least of
    all <|im_end|>) may be appended after it, and pooling reads that token's state."""
    from transformers import AutoModel, AutoTokenizer

    enc = TextEncoder(TextEncoderConfig(model_path=str(qwen3_embedding_like), pooling="last_token",
                                        instruction=INSTRUCTION, device="cpu", batch_size=4))
    tok = AutoTokenizer.from_pretrained(str(qwen3_embedding_like), local_files_only=True)
    endoftext, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    assert tok.eos_token_id == im_end and tok.pad_token_id == endoftext
    text = "the user paid for coffee"
    prompt = f"Instruct: {INSTRUCTION}\nQuery:{text}"
    ids = enc._tokenize([text], INSTRUCTION)[0][0]
    assert ids == tok(prompt)["input_ids"]
    assert ids[-1] == endoftext and im_end not in ids
    assert enc.pooled_token_id == endoftext
    model = AutoModel.from_pretrained(str(qwen3_embedding_like), local_files_only=True).eval()
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    expected = torch.nn.functional.normalize(hidden, dim=-1).numpy()
    batch = enc.encode([text, "searched cheap flights to paris and opened a game app"])
    np.testing.assert_allclose(batch[0], expected, atol=1e-5)
    # truncation keeps the terminator: a long text still ends on <|endoftext|>
    long_ids = enc._tokenize(["coffee " * 400], INSTRUCTION)[0][0]
    assert len(long_ids) <= enc.config.max_length and long_ids[-1] == endoftext
