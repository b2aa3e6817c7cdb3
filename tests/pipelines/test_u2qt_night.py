"""The U²QT-AAAI tokenizer through the real pipeline on the tiny world: trained from its preset,
evaluated, promoted, two nights (Spark, Delta), codes equal to a recomputation on the driver that
embeds each line with the text encoder directly, and a night whose context_sources differ from
the bundle's refused. The module trains once."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from pipelines.lake.lake import Lake
from tests.conftest import REPO_ROOT, dates_of, make_settings

PRESET = "conf/model/u2qt_aaai_small.yaml"


@pytest.fixture(scope="module")
def u2qt_lake(spark, trained_lake, tmp_path_factory):
    """The tiny world's input tables with a U²QT tokenizer trained, evaluated, promoted and run
    on both world dates."""
    from pipelines.night.daily_job import run_day
    from pipelines.tokenizer.promotion_gates import evaluate
    from pipelines.tokenizer.registry import promote
    from pipelines.tokenizer.train_job import train

    root = tmp_path_factory.mktemp("u2qt")
    for table in ("raw_events", "user_profile", "user_labels"):
        shutil.copytree(Path(trained_lake["settings"].tables_root) / table, root / "lake" / table)
    settings = make_settings(root / "lake", root / "model", training={"preset": PRESET})
    summary = train(spark, settings)
    evaluation = evaluate(spark, settings, summary["tokenizer_version"])
    # the tiny world's held-out day is too small for the gates to mean much (they are tested on FOUNDv2)
    promote(settings, summary["tokenizer_version"], force=True, reason="tiny world")
    world = trained_lake["world"]
    dates = dates_of(world)
    metrics = [run_day(spark, settings, d, run_id=f"u2qt-{d}") for d in dates]
    return {"settings": settings, "summary": summary, "evaluation": evaluation, "dates": dates, "metrics": metrics}


def test_a_u2qt_bundle_is_trained_evaluated_and_tokenizes_two_nights(spark, u2qt_lake):
    from pipelines.night.day_run import load_tokenizer_info
    from u2qt_core.bundle import read_contract

    settings, summary = u2qt_lake["settings"], u2qt_lake["summary"]
    bundle = Path(summary["bundle"])
    assert (bundle / "frontend.safetensors").is_file()
    contract = read_contract(bundle)
    assert contract["architecture"]["name"] == "u2qt_aaai"
    assert contract["architecture"]["frontend"]["context_sources"] == {"spm": ["search"]}
    info = load_tokenizer_info(settings)
    assert info.architecture == "u2qt_aaai" and info.version == summary["tokenizer_version"]
    gates = u2qt_lake["evaluation"]["gates"]
    assert np.isfinite(gates["reconstruction_error"]["value"]) and gates["min_level_utilization"]["value"] > 0
    day = Lake(spark, settings).read("user_day_tokens")
    sources = settings.sources_config().all_sources
    for event_date in u2qt_lake["dates"]:
        rows = day.where(F.col("event_date") == event_date)
        assert {r["source"] for r in rows.select("source").distinct().collect()} == set(sources)
        assert rows.where(F.col("tokenizer_version") != info.version).count() == 0
        assert rows.where(F.size("codes") != info.num_levels).count() == 0


def _driver_codes(spark, settings, event_date: str) -> dict[tuple[int, str], list[int]]:
    """The date's codes recomputed on the driver: the night's inputs collected, each line embedded
    by the text encoder called directly, the bundle's model on one padded batch."""
    from pipelines.night.documents import split_document
    from pipelines.night.day_run import load_tokenizer_info
    from pipelines.tokenizer.sample import sample_inputs
    from u2qt_core.bundle import load_bundle
    from u2qt_core.encoders.text import get_text_encoder
    from u2qt_core.u2qt_training import SequenceSample

    model, _, _ = load_bundle(load_tokenizer_info(settings).model_dir)
    sources = settings.sources_config()
    encoder = get_text_encoder(settings.encoder)
    rows = sample_inputs(spark, settings, start_date=event_date, end_date=event_date, max_per_source=0).collect()
    days: dict[int, dict[str, np.ndarray]] = {}
    for r in rows:
        if r["source"] == sources.tabular.name:
            x = np.asarray(r["features"], dtype=np.float32).reshape(-1, 1)
        else:
            label = sources.text_sources[r["source"]].label
            x = encoder.encode(split_document(r["document"], label, sources.document.line_separator))
        days.setdefault(int(r["user_id"]), {})[r["source"]] = x
    users = sorted(days)
    sample = SequenceSample.from_user_days([days[u] for u in users], model.frontend_config.input_dims)
    quantized = model.quantize_measured(sample.batch(np.arange(len(users)), model.frontend_config.max_len))
    return {(u, s): codes[i].tolist() for s, (codes, _) in quantized.items() for i, u in enumerate(users)
            if s in days[u]}


def test_night_codes_equal_a_driver_side_recomputation(spark, u2qt_lake):
    settings = u2qt_lake["settings"]
    for event_date in u2qt_lake["dates"]:
        night = {(int(r["user_id"]), r["source"]): list(r["codes"]) for r in
                 Lake(spark, settings).read("user_day_tokens").where(F.col("event_date") == event_date).collect()}
        assert night and night == _driver_codes(spark, settings, event_date)


def test_a_night_with_other_context_sources_is_refused(u2qt_lake, tmp_path):
    import yaml

    from pipelines.night.day_run import load_tokenizer_info
    from u2qt_core.bundle import ContractMismatch

    settings = u2qt_lake["settings"]
    sources = yaml.safe_load((REPO_ROOT / "conf" / "sources.yaml").read_text())
    sources["context_sources"] = {"spm": ["search", "app"]}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(sources, sort_keys=False))
    changed = make_settings(Path(settings.tables_root), Path(settings.model_dir), training={"preset": PRESET},
                            sources=str(tmp_path / "sources.yaml"))
    with pytest.raises(ContractMismatch, match=r"context_sources = \{'spm': \['search'\]\}"):
        load_tokenizer_info(changed)
