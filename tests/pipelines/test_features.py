"""user_features from published tokens, checked against a recomputation on the driver with the
tokenizer's own decode_codes and scikit-learn's TfidfTransformer (not the job's code path)."""
from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F
from sklearn.feature_extraction.text import TfidfTransformer

from pipelines import tables
from pipelines.day_run import open_run
from pipelines.features import build_features
from u2qt_core.bundle import load_bundle


def _expected(spark, settings, as_of: str, half_life: float):
    """{user_id: (codebook_vectors [S*D], {column: value})} recomputed from user_day_tokens."""
    run = open_run(spark, settings, as_of, run_id=f"expect-{as_of}")
    model, _, _ = load_bundle(run.tokenizer.model_dir)
    cfg = model.config
    S, L, D, size = len(cfg.sources), cfg.num_levels, cfg.code_dim, cfg.code_table_size
    rows = (tables.read_table(spark, run.settings, "user_day_tokens")
            .where(F.col("event_date") <= as_of).collect())
    users = sorted({r["user_id"] for r in rows})
    position = {u: i for i, u in enumerate(users)}
    sums = np.zeros((len(users), S * D))
    totals = np.zeros((len(users), S))
    tf = np.zeros((len(users), S * L * size))
    for r in rows:
        s = cfg.sources.index(r["source"])
        w = 0.5 ** ((date.fromisoformat(as_of) - r["event_date"]).days / half_life)
        with torch.no_grad():
            z = model.decode_codes(torch.tensor([list(r["codes"])]), r["source"])[0].numpy()
        i = position[r["user_id"]]
        sums[i, s * D:(s + 1) * D] += w * z
        totals[i, s] += w
        for level, code in enumerate(r["codes"]):
            tf[i, (s * L + level) * size + code] += w
    means = sums / np.repeat(np.maximum(totals, 1e-300), D, axis=1)
    bag = TfidfTransformer(norm="l2", smooth_idf=True).fit_transform(tf).toarray()
    return users, means, bag, S * L * size


@pytest.fixture
def featured(spark, published_lake):
    settings = published_lake.model_copy(update={"features": published_lake.features.model_copy(
        update={"window_days": 7, "half_life_days": 1.0})})
    dates = sorted(str(r[0]) for r in tables.read_table(spark, settings, "user_day_tokens")
                   .select("event_date").distinct().collect())
    metrics = build_features(open_run(spark, settings, dates[-1], run_id="features-test"))
    return settings, dates[-1], metrics


def test_features_match_a_driver_side_recomputation(spark, featured):
    settings, as_of, metrics = featured
    users, means, bag, bag_size = _expected(spark, settings, as_of, half_life=1.0)
    got = {r["user_id"]: r for r in tables.read_table(spark, settings, "user_features")
           .where(F.col("as_of") == as_of).collect()}
    assert sorted(got) == users and metrics["active_users"] == len(users)
    for i, user in enumerate(users):
        row = got[user]
        assert row["bag_size"] == bag_size
        np.testing.assert_allclose(row["codebook_vectors"], means[i], rtol=1e-4, atol=1e-5)
        dense = np.zeros(bag_size)
        dense[np.asarray(row["bag_indices"])] = row["bag_values"]
        np.testing.assert_allclose(dense, bag[i], rtol=1e-4, atol=1e-6)
        assert list(row["bag_indices"]) == sorted(row["bag_indices"])


def test_a_rerun_replaces_the_as_of_date_and_only_chosen_columns_are_filled(spark, featured):
    settings, as_of, _ = featured
    bag_only = settings.model_copy(update={"features": settings.features.model_copy(
        update={"representations": ["bag_of_codes"]})})
    before = tables.read_table(spark, settings, "user_features").where(F.col("as_of") == as_of).count()
    build_features(open_run(spark, bag_only, as_of, run_id="features-rerun"))
    rows = tables.read_table(spark, settings, "user_features").where(F.col("as_of") == as_of)
    assert rows.count() == before
    assert rows.where(F.col("codebook_vectors").isNotNull()).count() == 0
    assert rows.where(F.size("bag_indices") > 0).count() == before
    recorded = tables.read_table(spark, settings, "run_metrics").where("step = 'features'").count()
    assert recorded == 2
