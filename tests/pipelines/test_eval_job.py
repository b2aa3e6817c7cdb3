"""The evaluation job: storage measured on real Delta writes, and (slow) run_eval end to end on a
small world with a tiny configuration."""
from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
import yaml

from pipelines.evaluation.eval_job import measure_storage, run_eval
from tests.conftest import make_settings


def test_storage_of_tokens_vs_embeddings_on_delta(spark, tmp_path) -> None:
    rng = np.random.default_rng(0)
    users = {"bill": np.array([1, 1, 2, 3]), "tabular": np.array([1, 2])}
    days = {"bill": np.array([0, 1, 0, 1]), "tabular": np.array([0, 0])}
    codes = {"bill": rng.integers(0, 256, (4, 4)), "tabular": rng.integers(0, 256, (2, 4))}
    vectors = {"bill": rng.normal(size=(4, 384)).astype(np.float32), "tabular": rng.normal(size=(2, 15)).astype(np.float32)}
    result = measure_storage(spark, tmp_path / "storage", user_ids=users, days=days, codes=codes, vectors=vectors,
                             start_date=date(2026, 1, 5))
    tokens, embeddings = result["tokens"], result["embeddings"]
    assert tokens["rows"] == embeddings["rows"] == 6
    assert tokens["user_days"] == 4  # distinct (user, day): (1,0) (1,1) (2,0) (3,1)
    assert tokens["files"] >= 2  # partitioned by event_date
    assert 0 < tokens["data_bytes"] < embeddings["data_bytes"]
    assert result["ratio_data"] == pytest.approx(embeddings["data_bytes"] / tokens["data_bytes"])
    assert tokens["data_bytes_per_user_day"] == pytest.approx(tokens["data_bytes"] / tokens["user_days"])
    written = spark.read.format("delta").load(str(tmp_path / "storage" / "tokens"))
    assert dict(written.dtypes)["codes"] == "array<smallint>"
    row = written.where("user_id = 3").first()
    assert list(row["codes"]) == codes["bill"][3].tolist() and str(row["event_date"]) == "2026-01-06"


SMALL_WORLD = {
    "seed": 11, "n_users": 80, "start_date": "2026-01-05", "n_days": 6, "label_window_days": 7,
    "rec_train_days": 6, "rec_eval_days": 2, "rec_impressions_per_day": 3.0, "n_items": 100,
    "mean_events_per_active_day": 3.0, "inactive_day_rate": 0.5, "launderer_rate": 0.2, "num_partitions": 2,
}
SMALL_EVAL = {
    "tasks": ["takeout", "games"], "torch_threads": 1,
    "tokenizer": {"preset": "conf/model/tiny.yaml", "steps": 20},
    "u2qt": {"steps": 4, "inference_user_days": 8, "overrides": {"train": {"batch_size": 8}}},
    "probe": {"c_grid": [1.0], "tfidf": {"max_features": 200, "min_df": 1, "ngram_max": 1}},
    "alignment": {"task_sets": ["S", "S+T+W"], "steps": 3, "batch_size": 16, "d_model": 16, "description_days": 2,
                  "period": 2, "window_days": 1, "max_steps_per_user": 16},
    "masknet": {"epochs": 1, "batch_size": 256, "block_dim": 16, "num_blocks": 2, "sampled_negatives": 20},
    "ablations": {"steps": 10, "codebook_designs": [
        {"name": "4share", "variant": "shared_only", "shared_levels": 4, "specific_levels": 0, "num_codes": 16, "code_dim": 16},
        {"name": "2+2", "variant": "multiview", "shared_levels": 2, "specific_levels": 2, "num_codes": 16, "code_dim": 16},
    ]},
    "report": {"tsne_points_per_source": 20, "tsne_perplexity": 5},
}


@pytest.mark.slow
def test_run_eval_end_to_end_on_a_small_world(spark, tmp_path) -> None:
    world = tmp_path / "world.yaml"
    world.write_text(yaml.safe_dump(SMALL_WORLD))
    eval_cfg = tmp_path / "eval.yaml"
    eval_cfg.write_text(yaml.safe_dump(SMALL_EVAL))
    settings = make_settings(tmp_path / "lake", tmp_path / "model", inference={"partitions": 2, "batch_rows": 128})
    out = tmp_path / "report"
    report = run_eval(spark, settings, world_config=world, eval_config=eval_cfg, out_dir=out)
    assert report == out / "report.md" and report.exists()
    results = json.loads((out / "results.json").read_text())
    reps = results["representations"]
    assert {"tokens_bag", "tokens_vectors", "tokens_fused", "continuous", "tfidf", "tfidf_profile", "tabular",
            "tabular_tokens", "tabular_token", "tabular_raw_token"} <= set(reps)
    assert reps["tabular_token"]["dim"] == 16     # one source's code vector (tiny preset: 16 dims)
    assert reps["tabular_raw_token"]["dim"] == reps["tabular"]["dim"] + reps["tabular_token"]["dim"]
    for entry in reps.values():
        for task in ("takeout", "games"):
            assert 0.0 <= entry["tasks"][task]["auc"] <= 1.0
            low, high = entry["tasks"][task]["auc_ci"]
            assert 0.0 <= low <= high <= 1.0
        assert 0.0 <= entry["avg_auc_ci"][0] <= entry["avg_auc_ci"][1] <= 1.0
    # U²QT-AAAI beside FOUNDv2: probed on the same resamples, costed, in the report and the summary
    assert {"u2qt_bag", "u2qt_vectors"} <= set(reps)
    variant = results["u2qt"]
    for name in ("foundv2", "u2qt"):
        c = variant["costs"][name]
        assert len(c["utilization_per_level"]) == 4 and all(0.0 < u <= 1.0 for u in c["utilization_per_level"])
        assert 0.0 <= c["collision_rate"] <= 1.0
        assert c["train_seconds_per_1k_users"] > 0 and c["train_cpu_seconds_per_1k_users"] > 0
    for name in ("foundv2", "u2qt", "continuous"):
        assert variant["costs"][name]["inference_cpu_per_1k_documents"] > 0
        assert variant["costs"][name]["bytes_per_user_day"] > 0
    assert variant["costs"]["continuous"]["bytes_per_user_day"] > variant["costs"]["u2qt"]["bytes_per_user_day"]
    assert variant["inference"]["user_days"] == 8 and variant["inference"]["documents"] > 0
    assert "diff_ci" in variant["differences"]["U²QT-AAAI vs FOUNDv2 tokens (mean codebook vector)"]
    text = report.read_text()
    assert "## U²QT-AAAI beside FOUNDv2" in text and "U²QT-AAAI tokens: bag of codes" in text
    from u2qt_core.evaluation.summary import worlds_summary
    summary, table = worlds_summary({"small": results})
    assert "inference CPU s / 1k documents" in summary and "U²QT-AAAI vs FOUNDv2 tokens (bag of codes)" in table
    assert set(results["alignment"]) == {"none", "S", "S+T+W"}
    assert set(results["recommendation"]["models"]) == {"profile", "profile+tokens"}
    assert results["storage"]["ratio_data"] > 1.0
    assert [r["name"] for r in results["ablation_sources"]][0] == "All sources"
    assert len(results["ablation_sources"]) == 1 + 6
    assert (out / "utilization_main.png").exists() and (out / "tsne_sources.png").exists()
    assert "HR@10" in text and "bag of codes" in text
    # a second run reuses the embedding caches and the world already in the lake (the parts that
    # do not read them are switched off: this run checks the caches only)
    first_embed = results["meta"]["embed_seconds"]
    run_eval(spark, settings, world_config=world, eval_config=eval_cfg, out_dir=out, eval_overrides={
        "alignment": {"enabled": False}, "masknet": {"enabled": False}, "storage": False, "u2qt": {"enabled": False},
        "ablations": {"codebook_designs": [], "drop_sources": False}})
    again = json.loads((out / "results.json").read_text())
    assert again["meta"]["embed_cached"] is True and again["meta"]["embed_seconds"] == first_embed
    assert "embed (cache hit)" in again["timings"] and again["timings"]["world"] < results["timings"]["world"]
    # the line sequences come back from their cache (no Spark session needed)
    from pipelines.evaluation.u2qt_variant import embed_all_sequences, u2qt_preset
    from pipelines.world import load_world_config
    from u2qt_core.encoders.text import get_text_encoder
    from u2qt_core.evaluation.config import load_eval_config

    preset = u2qt_preset(settings, load_eval_config(eval_cfg), get_text_encoder(settings.encoder).dim)
    cached = embed_all_sequences(None, settings, load_world_config(world), out / "cache", preset)
    assert cached.embed_seconds == variant["line_embed_seconds"] and len(cached.sample) == variant["user_days"]
