"""The SQL token-string views render exactly what u2qt_core.token_strings renders in Python:
wide codes (K > 10000), every variant's shared prefix, union offsets; codes Python refuses read NULL."""
from __future__ import annotations

import datetime as dt

import pytest

from pipelines.lake.tables import USER_DAY_TOKENS, USER_TOKENS
from pipelines.lake.views import register_views
from pipelines.lake.lake import Lake
from tests.conftest import make_settings
from u2qt_core.errors import InputError
from u2qt_core.token_strings import TokenFormat, collision_token

SOURCES = ("bill", "spm", "tabular")
ROWS = [  # (user_id, source, codes): valid for K=20000 multiview; the first two also for union K=8
    (1, "bill", [3, 9, 15, 0]),
    (2, "spm", [17, 2, 23, 5]),
    (3, "bill", [0, 7, 12345, 19999]),
    (4, "tabular", [40, 1, 2, 3]),
    (5, "spm", [1, -5, 2, 3]),
]
FORMATS = [
    TokenFormat(2, "multiview", 20000, SOURCES),   # wide codes: 5 digits
    TokenFormat(2, "multiview", 1024, SOURCES),
    TokenFormat(4, "shared_only", 20000, SOURCES),
    TokenFormat(0, "specific_only", None, SOURCES),
    TokenFormat(0, "union", 8, SOURCES),            # bill block [8, 16), spm [16, 24), tabular [24, 32)
]


def _python_tokens(fmt: TokenFormat, source: str, codes: list[int]) -> list[str | None]:
    """Per level the token Python renders, None where it refuses the code (each level is rendered
    in a row whose other codes are 0, which every variant accepts, so only this code decides)."""
    out = []
    for level, code in enumerate(codes):
        probe = [0] * len(codes)
        probe[level] = code
        try:
            out.append(fmt.tokens(probe, source)[level])
        except InputError:
            out.append(None)
    return out


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("token_views")
    settings = make_settings(root / "lake", root / "model")
    path = Lake(spark, settings).ensure(USER_DAY_TOKENS, "u2qt-test")
    rows = [(u, dt.date(2026, 1, 5), s, c, "u2qt-test", "run-1") for u, s, c in ROWS]
    spark.createDataFrame(rows, USER_DAY_TOKENS.schema).write.format("delta").mode("append").save(path)
    path = Lake(spark, settings).ensure(USER_TOKENS, "u2qt-test")
    identities = [(u, dt.date(2026, 1, 5), [1, 2], ["bill"], 0.5, suffix, "u2qt-test", "run-1")
                  for u, suffix in ((1, 0), (2, 3), (3, 12))]
    spark.createDataFrame(identities, USER_TOKENS.schema).write.format("delta").mode("append").save(path)
    return settings


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.variant}-K{f.num_codes}")
def test_view_matches_python(spark, lake, fmt: TokenFormat) -> None:
    assert "user_day_token_strings" in register_views(Lake(spark, lake), fmt)
    got = {r["user_id"]: list(r["token_strings"]) for r in
           spark.sql("SELECT user_id, token_strings FROM user_day_token_strings").collect()}
    want = {u: _python_tokens(fmt, s, c) for u, s, c in ROWS}
    assert got == want
    if fmt.variant == "union":
        assert got[1] == ["<s1_0003>", "<bill2_0001>", "<bill3_0007>", "<s4_0000>"]
        assert got[3][2:] == [None, None]          # outside every block
    if fmt.num_codes == 20000:
        assert got[3][3] == ("<s4_19999>" if fmt.variant == "shared_only" else "<bill4_19999>")
        assert got[1][0] == "<s1_00003>"
    assert got[5][1] is None                       # a negative (wrapped) code is never rendered


def test_identity_view_matches_python(spark, lake) -> None:
    register_views(Lake(spark, lake), None)
    got = dict(spark.sql("SELECT collision_suffix, collision_token FROM user_identity").collect())
    assert got == {s: collision_token(s) for s in (0, 3, 12)}
