"""Quality gates on hand-written staged rows (real Spark + Delta, no trained model needed):
codes outside their codebook's range stop the night, union utilization uses the right
denominators, and the pipeline's shared-prefix level count is the config's."""
from __future__ import annotations

import datetime as dt

import pytest

from pipelines.lake import tables
from pipelines.night.day_run import DayRun, TokenizerInfo
from pipelines.night.quality import QualityGateFailed, check_quality, level_utilization
from pipelines.lake.lake import Lake
from tests.conftest import make_settings

SOURCES = ("bill", "spm", "mini", "app", "search", "tabular")
DATE = "2026-01-05"
K = 16


def _info(variant: str, shared: int) -> TokenizerInfo:
    return TokenizerInfo(model_dir="", version="u2qt-test00000000", sources=SOURCES, tabular_sources=("tabular",),
                         num_levels=4, shared_prefix_levels=shared, num_codes=K, variant=variant)


def _staged_run(spark, tmp_path, info: TokenizerInfo, rows: list[tuple[int, str, list[int]]]) -> DayRun:
    settings = make_settings(tmp_path / "lake", tmp_path / "model")
    run = DayRun(spark, settings, DATE, "test-run", info)
    for spec in (tables.RAW_EVENTS, tables.QUARANTINE):
        Lake(spark, settings).ensure(spec)
    day = dt.date.fromisoformat(DATE)
    frame = spark.createDataFrame(
        [(uid, day, source, codes, info.version, "test-run", None, None, 0.5) for uid, source, codes in rows],
        tables.STAGING_DAY_TOKENS.schema)
    run.replace_partition(frame, tables.STAGING_DAY_TOKENS)
    return run


def test_codes_outside_the_codebook_fail_the_gate(spark, tmp_path):
    run = _staged_run(spark, tmp_path, _info("multiview", 2), [
        (1, "bill", [0, 1, 2, 3]),
        (2, "bill", [0, 1, 2, K]),         # K itself is one past the last code
        (3, "spm", [-32768, 1, 2, 3]),     # what an int16 wrap-around looks like
    ])
    with pytest.raises(QualityGateFailed, match="2 staged rows hold codes outside"):
        check_quality(run)


def test_union_codes_must_lie_in_the_shared_or_own_block(spark, tmp_path):
    spm_block = K * (1 + SOURCES.index("spm"))
    bill_block = K * (1 + SOURCES.index("bill"))
    rows = [(1, "spm", [0, spm_block, spm_block + K - 1, 3]), (2, "bill", [bill_block, 1, 2, 3])]
    run = _staged_run(spark, tmp_path, _info("union", 0), rows)
    check_quality(run)  # every code is in its shared or own block: passes
    bad = _staged_run(spark, tmp_path / "bad", _info("union", 0), rows + [(3, "bill", [spm_block, 1, 2, 3])])
    with pytest.raises(QualityGateFailed, match="1 staged rows hold codes outside"):
        check_quality(bad)


def test_union_utilization_is_per_block_and_reports_the_shared_block(spark, tmp_path):
    bill = K * (1 + SOURCES.index("bill"))
    # level 1 of bill uses 2 shared codes and K own codes: on main that read (K + 2) / K > 1
    rows = [(uid, "bill", [bill + uid, 1, 2, 3]) for uid in range(K)] + [(100, "bill", [0, 1, 2, 3]),
                                                                          (101, "spm", [5, 1, 2, 3])]
    run = _staged_run(spark, tmp_path, _info("union", 0), rows)
    staged = run.read("staging_day_tokens")
    utilization = level_utilization(run, staged)[DATE]
    assert all(0 < value <= 1 for value in utilization.values()), utilization
    assert utilization["union.1.bill"] == 1.0
    assert utilization["union.1.shared"] == 2 / K      # codes 0 (bill) and 5 (spm)
    assert utilization["union.2.shared"] == 1 / K


def test_pipeline_shared_prefix_is_the_configs(tmp_path):
    """The pipeline's shared-prefix count comes from MRQVAEConfig.token_shared_levels for every
    variant (day_run once had its own table of it that disagreed for union)."""
    from pipelines.night.day_run import tokenizer_info
    from u2qt_core.checkpoint import load_tokenizer, save_tokenizer
    from u2qt_core.config import load_model_preset
    from u2qt_core.mrqvae import MRQVAE
    from tests.conftest import REPO_ROOT, TINY_PRESET, world_layout

    base = load_model_preset(REPO_ROOT / TINY_PRESET, layout=world_layout()).mrqvae
    expected = {"multiview": 2, "shared_only": 4, "specific_only": 0, "union": 0}
    for variant, shared in expected.items():
        cfg = base.model_copy(update={"variant": variant})
        save_tokenizer(MRQVAE(cfg), tmp_path / variant)
        info = tokenizer_info(tmp_path / variant, *load_tokenizer(tmp_path / variant))
        assert info.shared_prefix_levels == cfg.token_shared_levels == shared, variant
