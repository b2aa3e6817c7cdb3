"""Token text form and its round trip."""

from __future__ import annotations

import pytest

from u2qt_core.config import MRQVAEConfig
from u2qt_core.errors import InputError
from u2qt_core.token_strings import (
    ParsedToken,
    code_to_token,
    codes_to_tokens,
    collision_token,
    parse_token,
    tokens_for_config,
    tokens_to_codes,
    vocabulary,
)


def test_token_format() -> None:
    assert code_to_token(412, 1, source=None, shared_levels=2) == "<s1_0412>"
    assert code_to_token(87, 3, source="bill", shared_levels=2) == "<bill3_0087>"
    assert code_to_token(87, 2, source="bill", shared_levels=2) == "<s2_0087>"  # shared level
    assert code_to_token(5, 1, source=None, shared_levels=0, num_codes=65536) == "<s1_00005>"
    assert collision_token(3) == "<c_3>"


def test_multiview_round_trip() -> None:
    tokens = codes_to_tokens([412, 9, 87, 1023], "bill", shared_levels=2)
    assert tokens == ["<s1_0412>", "<s2_0009>", "<bill3_0087>", "<bill4_1023>"]
    assert tokens_to_codes(tokens) == ("bill", [412, 9, 87, 1023])
    tokens = codes_to_tokens([1, 2, 3, 4, 5, 6], "search", shared_levels=4)
    assert tokens[-2:] == ["<search5_0005>", "<search6_0006>"]
    assert tokens_to_codes(tokens) == ("search", [1, 2, 3, 4, 5, 6])


def test_other_variants_round_trip() -> None:
    assert codes_to_tokens([1, 2], "app", 1, "shared_only") == ["<s1_0001>", "<s2_0002>"]
    assert tokens_to_codes(["<s1_0001>", "<s2_0002>"]) == (None, [1, 2])
    assert codes_to_tokens([1, 2], "app", 1, "specific_only") == ["<app1_0001>", "<app2_0002>"]
    assert tokens_to_codes(["<app1_0001>", "<app2_0002>"]) == ("app", [1, 2])
    sources = ["bill", "spm", "tabular"]
    # K = 16: shared block [0, 16), bill [16, 32), spm [32, 48), tabular [48, 64)
    tokens = codes_to_tokens([3, 35, 47, 0], "spm", 0, "union", num_codes=16, sources=sources)
    assert tokens == ["<s1_0003>", "<spm2_0003>", "<spm3_0015>", "<s4_0000>"]
    assert tokens_to_codes(tokens, variant="union", num_codes=16, sources=sources) == ("spm", [3, 35, 47, 0])
    with pytest.raises(InputError, match="neither shared"):
        codes_to_tokens([20], "spm", 0, "union", num_codes=16, sources=sources)  # bill's block
    with pytest.raises(InputError, match="needs num_codes"):
        codes_to_tokens([1], "spm", 0, "union")


def test_parse_token() -> None:
    assert parse_token("<bill3_0087>") == ParsedToken("specific", "bill", 3, 87)
    assert parse_token("<s1_0412>") == ParsedToken("shared", None, 1, 412)
    assert parse_token("<c_12>") == ParsedToken("collision", None, None, 12)
    assert parse_token("<mini_app2_0001>") == ParsedToken("specific", "mini_app", 2, 1)
    for bad in ["bill3_0087", "<bill_0087>", "<Bill3_1>", "<s0_0001>", "<c_>", "<bill3_12a>", ""]:
        with pytest.raises(InputError, match="malformed token"):
            parse_token(bad)


def test_tokens_to_codes_rejects_inconsistent_sequences() -> None:
    with pytest.raises(InputError, match="mixes source"):
        tokens_to_codes(["<s1_0001>", "<bill2_0001>", "<spm3_0001>"])
    with pytest.raises(InputError, match="position 1 has level 2"):
        tokens_to_codes(["<s2_0001>"])
    with pytest.raises(InputError, match="collision suffix"):
        tokens_to_codes(["<s1_0001>", "<c_0>"])
    with pytest.raises(InputError, match="must be >= 0"):
        code_to_token(-1, 1, source=None, shared_levels=1)


@pytest.mark.parametrize("variant", ["multiview", "shared_only", "specific_only", "union"])
def test_vocabulary_covers_every_emittable_token(variant: str) -> None:
    config = MRQVAEConfig(
        sources=["bill", "tabular"], input_dims={"bill": 8, "tabular": 3}, embed_dim=8,
        num_codes=4, shared_levels=1, specific_levels=2, variant=variant,
    )
    vocab = vocabulary(config, max_collision_suffix=2)
    assert len(vocab) == len(set(vocab)) and vocab[-3:] == ["<c_0>", "<c_1>", "<c_2>"]
    per_level = {"multiview": 1 + 2 + 2, "shared_only": 3, "specific_only": 6, "union": 3 * 3}[variant]
    assert len(vocab) - 3 == per_level * 4
    offsets = {"union": {"bill": 4, "tabular": 8}}.get(variant, {"bill": 0, "tabular": 0})
    for source in ["bill", "tabular"]:
        for codes in ([0, 1, 2], [3, 3, 3]):
            codes = [c + (offsets[source] if (variant == "union" and i > 0) else 0) for i, c in enumerate(codes)]
            tokens = tokens_for_config(codes, source, config)
            assert set(tokens) <= set(vocab)
            expected_source = None if variant == "shared_only" else source
            assert tokens_to_codes(tokens, variant=variant, num_codes=4, sources=config.sources) == (expected_source, codes)
