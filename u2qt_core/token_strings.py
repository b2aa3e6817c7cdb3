"""Text form of U2QT tokens.

* shared code: ``<s{level}_{code}>``, e.g. ``<s1_0412>`` (shared codebook of level 1, code 412);
* source-specific code: ``<{source}{level}_{code}>``, e.g. ``<bill3_0087>``; the level is the
  GLOBAL 1-based level (``Lc+1..Lc+Lu`` in the multiview variant);
* collision suffix (FOUNDv2 eq. 9): ``<c_{suffix}>``, e.g. ``<c_3>``.

Codes are zero-padded to 4 digits, or to the width of ``K - 1`` when ``num_codes`` K > 10000
is given.  Source names contain no digits (enforced by the config), so parsing is unambiguous.

Variants: ``multiview`` levels ``1..Lc`` are shared, the rest specific; ``shared_only`` every level
is ``s``; ``specific_only`` every level is the source.  ``union``: codes are indices into the
level's union table (block 0 shared, block ``1 + i`` for ``sources[i]``, see
:mod:`u2qt_core.mrqvae`); a code in the shared block becomes ``<s{level}_{code}>`` and a code
in the source's block ``<{source}{level}_{code - K * (1 + i)}>``, so ``num_codes`` and
``sources`` must be passed to convert in either direction.

:func:`sql_codes_to_tokens` (and :meth:`TokenFormat.sql`) generate the Spark SQL expression the
token-string views use from these same rules, so SQL and Python agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from u2qt_core.config import SOURCE_NAME_RE, MRQVAEConfig
from u2qt_core.errors import InputError

__all__ = [
    "ParsedToken",
    "TokenFormat",
    "code_to_token",
    "codes_to_tokens",
    "collision_token",
    "parse_token",
    "sql_codes_to_tokens",
    "sql_collision_token",
    "tokens_to_codes",
    "tokens_for_config",
    "vocabulary",
]

Variant = Literal["multiview", "shared_only", "specific_only", "union"]

_TOKEN_RE = re.compile(r"^<(?:c_(?P<suffix>\d+)|(?P<name>[a-z](?:[a-z_]*[a-z])?)(?P<level>\d+)_(?P<code>\d+))>$")
SHARED_NAME = "s"


@dataclass(frozen=True)
class ParsedToken:
    """A parsed token: ``kind`` shared/specific/collision; ``code`` is the suffix for a collision."""

    kind: Literal["shared", "specific", "collision"]
    source: str | None
    level: int | None
    code: int


def _width(num_codes: int | None) -> int:
    return 4 if num_codes is None or num_codes <= 10000 else len(str(num_codes - 1))


def code_to_token(
    code: int, level: int, *, source: str | None, shared_levels: int, num_codes: int | None = None
) -> str:
    """One token: shared when ``source`` is None or ``level <= shared_levels``, else source-specific."""
    code, level = int(code), int(level)
    if code < 0:
        raise InputError(f"code {code} at level {level}: codes must be >= 0")
    if num_codes is not None and code >= num_codes:
        raise InputError(f"code {code} at level {level}: out of range for K={num_codes}")
    if level < 1:
        raise InputError(f"level {level}: levels are 1-based")
    digits = f"{code:0{_width(num_codes)}d}"
    if source is None or level <= shared_levels:
        return f"<{SHARED_NAME}{level}_{digits}>"
    if not SOURCE_NAME_RE.match(source) or source in {SHARED_NAME, "c"}:
        raise InputError(f"source {source!r} cannot appear in a token (lowercase letters/underscores, not 's' or 'c')")
    return f"<{source}{level}_{digits}>"


def codes_to_tokens(
    codes: Sequence[int],
    source: str,
    shared_levels: int,
    variant: Variant = "multiview",
    *,
    num_codes: int | None = None,
    sources: Sequence[str] | None = None,
) -> list[str]:
    """A source's L codes -> L tokens (see the module docstring for the per-variant layout)."""
    codes = [int(c) for c in codes]
    if variant == "multiview":
        return [code_to_token(c, l, source=source, shared_levels=shared_levels, num_codes=num_codes)
                for l, c in enumerate(codes, start=1)]
    if variant == "shared_only":
        return [code_to_token(c, l, source=None, shared_levels=0, num_codes=num_codes) for l, c in enumerate(codes, start=1)]
    if variant == "specific_only":
        return [code_to_token(c, l, source=source, shared_levels=0, num_codes=num_codes) for l, c in enumerate(codes, start=1)]
    if variant == "union":
        k, index = _union_layout(source, num_codes, sources)
        tokens = []
        for level, code in enumerate(codes, start=1):
            if 0 <= code < k:
                tokens.append(code_to_token(code, level, source=None, shared_levels=0, num_codes=k))
            elif k * (1 + index) <= code < k * (2 + index):
                tokens.append(code_to_token(code - k * (1 + index), level, source=source, shared_levels=0, num_codes=k))
            else:
                raise InputError(
                    f"source {source!r} level {level}: union code {code} is neither shared [0, {k}) nor in "
                    f"the source's block [{k * (1 + index)}, {k * (2 + index)})"
                )
        return tokens
    raise InputError(f"unknown variant {variant!r}")


def _union_layout(source: str | None, num_codes: int | None, sources: Sequence[str] | None) -> tuple[int, int]:
    if num_codes is None or sources is None:
        raise InputError("variant 'union' needs num_codes and sources to map union indices")
    if source is None:
        return num_codes, -1
    if source not in sources:
        raise InputError(f"unknown source {source!r}; known sources: {list(sources)}")
    return num_codes, list(sources).index(source)


def collision_token(suffix: int) -> str:
    """Collision fallback token ``<c_{suffix}>`` (FOUNDv2 eq. 9)."""
    suffix = int(suffix)
    if suffix < 0:
        raise InputError(f"collision suffix {suffix} must be >= 0")
    return f"<c_{suffix}>"


def parse_token(token: str) -> ParsedToken:
    """Parse one token string; :class:`InputError` naming it when malformed."""
    match = _TOKEN_RE.match(token) if isinstance(token, str) else None
    if match is None:
        raise InputError(f"malformed token {token!r}: expected <s1_0412>, <bill3_0087> or <c_3>")
    if match["suffix"] is not None:
        return ParsedToken(kind="collision", source=None, level=None, code=int(match["suffix"]))
    level = int(match["level"])
    if level < 1:
        raise InputError(f"malformed token {token!r}: levels are 1-based")
    if match["name"] == SHARED_NAME:
        return ParsedToken(kind="shared", source=None, level=level, code=int(match["code"]))
    return ParsedToken(kind="specific", source=match["name"], level=level, code=int(match["code"]))


def tokens_to_codes(
    tokens: Sequence[str],
    *,
    variant: Variant = "multiview",
    num_codes: int | None = None,
    sources: Sequence[str] | None = None,
) -> tuple[str | None, list[int]]:
    """Inverse of :func:`codes_to_tokens`: one source's tokens -> (source or None if all shared, codes).

    Levels must run 1, 2, ... in order and all specific tokens must name the same source.  With
    ``variant="union"`` (plus ``num_codes`` and ``sources``) specific codes are mapped back to
    union-table indices.
    """
    source: str | None = None
    codes: list[int] = []
    for position, token in enumerate(tokens, start=1):
        parsed = parse_token(token)
        if parsed.kind == "collision":
            raise InputError(f"token {token!r} at position {position} is a collision suffix, not a code")
        if parsed.level != position:
            raise InputError(f"token {token!r} at position {position} has level {parsed.level}")
        if parsed.kind == "specific":
            if source is not None and parsed.source != source:
                raise InputError(f"token {token!r} mixes source {parsed.source!r} with {source!r}")
            source = parsed.source
        codes.append(parsed.code)
    if variant == "union":
        k, index = _union_layout(source, num_codes, sources)
        specific = [parse_token(t).kind == "specific" for t in tokens]
        codes = [c + k * (1 + index) if is_specific else c for c, is_specific in zip(codes, specific, strict=True)]
    return source, codes


def tokens_for_config(codes: Sequence[int], source: str, config: MRQVAEConfig) -> list[str]:
    """:func:`codes_to_tokens` with the variant, levels, K and source order taken from ``config``."""
    return TokenFormat.of(config).tokens(codes, source)


@dataclass(frozen=True)
class TokenFormat:
    """Everything the text form of a tokenizer's codes depends on: the per-variant layout, the
    shared prefix length (``MRQVAEConfig.token_shared_levels``), K and the source order (union).

    :meth:`tokens` renders in Python, :meth:`sql` gives the Spark SQL expression that renders the
    same strings (the ``user_day_token_strings`` view), so the two can never drift apart.
    """

    shared_levels: int
    variant: Variant = "multiview"
    num_codes: int | None = None
    sources: tuple[str, ...] | None = None

    @classmethod
    def of(cls, config: MRQVAEConfig) -> "TokenFormat":
        return cls(config.token_shared_levels, config.variant, config.num_codes, tuple(config.sources))

    def tokens(self, codes: Sequence[int], source: str) -> list[str]:
        """:func:`codes_to_tokens` of one source's L codes."""
        return codes_to_tokens(codes, source, self.shared_levels, self.variant, num_codes=self.num_codes,
                               sources=self.sources)

    def sql(self, codes_column: str = "codes", source_column: str = "source") -> str:
        """:func:`sql_codes_to_tokens` over the given columns."""
        return sql_codes_to_tokens(codes_column, source_column, self.shared_levels, self.variant,
                                   num_codes=self.num_codes, sources=self.sources)


def vocabulary(config: MRQVAEConfig, *, max_collision_suffix: int = 0) -> list[str]:
    """Every code token a tokenizer with ``config`` can emit (level order, shared tokens first
    within a level, then sources in ``config.sources`` order), followed by ``<c_0>`` ..
    ``<c_{max_collision_suffix}>``.  Deterministic: usable as an embedding-table index."""
    k = config.num_codes
    tokens: list[str] = []
    for level in range(1, config.num_levels + 1):
        kind = config.level_kind(level)
        if kind in ("shared", "union"):
            tokens.extend(code_to_token(c, level, source=None, shared_levels=0, num_codes=k) for c in range(k))
        if kind in ("specific", "union"):
            for source in config.sources:
                tokens.extend(code_to_token(c, level, source=source, shared_levels=0, num_codes=k) for c in range(k))
    tokens.extend(collision_token(i) for i in range(max_collision_suffix + 1))
    return tokens


# --------------------------------------------------------------------------- Spark SQL
def _sql_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_codes_to_tokens(
    codes_column: str,
    source_column: str,
    shared_levels: int,
    variant: Variant = "multiview",
    *,
    num_codes: int | None = None,
    sources: Sequence[str] | None = None,
) -> str:
    """A Spark SQL expression: the ``array<smallint>`` column ``codes_column`` of the source named
    by ``source_column`` -> ``array<string>`` of tokens, the same strings :func:`codes_to_tokens`
    gives for the same arguments (shared prefix, global levels, zero-padding to the width of
    ``K - 1``, union offsets).  A code that function would refuse (negative, ``>= K``, outside
    the source's union block, an unknown source in a union) gives a NULL token.
    """
    if variant not in ("multiview", "shared_only", "specific_only", "union"):
        raise InputError(f"unknown variant {variant!r}")
    width = _width(num_codes)

    def token(prefix_sql: str, code_sql: str) -> str:
        return (f"concat('<', {prefix_sql}, CAST(i + 1 AS STRING), '_', "
                f"format_string('%0{width}d', {code_sql}), '>')")

    if variant == "union":
        k, _ = _union_layout(None, num_codes, sources)
        index = ("CASE " + source_column + " " + " ".join(f"WHEN {_sql_literal(s)} THEN {i}" for i, s in
                                                           enumerate(sources)) + " END")
        block = f"{k} * (1 + {index})"
        body = (f"CASE WHEN code >= 0 AND code < {k} THEN {token(_sql_literal(SHARED_NAME), 'code')} "
                f"WHEN code >= {block} AND code < {block} + {k} THEN {token(source_column, f'code - {block}')} END")
    else:
        in_range = "code >= 0" + (f" AND code < {num_codes}" if num_codes is not None else "")
        prefix = {"multiview": f"IF(i < {int(shared_levels)}, {_sql_literal(SHARED_NAME)}, {source_column})",
                  "shared_only": _sql_literal(SHARED_NAME), "specific_only": source_column}[variant]
        body = f"CASE WHEN {in_range} THEN {token(prefix, 'code')} END"
    return f"transform({codes_column}, (code, i) -> {body})"


def sql_collision_token(suffix_column: str) -> str:
    """A Spark SQL expression giving :func:`collision_token` of ``suffix_column`` (NULL if < 0)."""
    return f"IF({suffix_column} >= 0, concat('<c_', CAST({suffix_column} AS STRING), '>'), NULL)"
