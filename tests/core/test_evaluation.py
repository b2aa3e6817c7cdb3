"""Tests of u2qt_core.evaluation: probes, KS, bag of codes, MaskNet + HR@k, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from u2qt_core.errors import ConfigError, InputError
from u2qt_core.evaluation import (
    bag_of_codes,
    hit_rate_at_k,
    ks_statistic,
    linear_probe,
    load_eval_config,
    mean_embeddings,
    split_users,
    token_histories,
)
from u2qt_core.evaluation.masknet import CTRData, MaskNet, predict, train_masknet, user_token_bags


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------ probes
def test_probe_separable_features_reach_auc_one_and_random_features_half() -> None:
    rng = np.random.default_rng(0)
    n = 600
    y = (rng.random(n) < 0.3).astype(int)
    separable = np.c_[y * 3.0 + rng.normal(0, 0.3, n), rng.normal(size=(n, 4))]
    noise = rng.normal(size=(n, 5))
    split = split_users(y, 0.3, seed=1)
    good = linear_probe(separable, y, split=split, c_grid=[0.1, 1.0], cv_folds=3)
    bad = linear_probe(noise, y, split=split, c_grid=[1.0])
    assert good.auc > 0.99 and good.ks > 0.95
    assert abs(bad.auc - 0.5) < 0.1
    assert good.n_test == len(split[1]) == 180


def test_bootstrap_intervals_cover_the_auc_are_paired_and_shrink_with_more_users() -> None:
    from u2qt_core.evaluation.probes import bootstrap_aucs, probe_tasks

    rng = np.random.default_rng(0)
    n = 800
    y = (rng.random(n) < 0.4).astype(int)
    x = np.c_[y * 0.8 + rng.normal(0, 1.0, n), rng.normal(size=(n, 3))]
    labels = {"a": y, "b": 1 - y}
    splits = {t: split_users(v, 0.3, seed=2) for t, v in labels.items()}
    out = probe_tasks(x, labels, splits, c_grid=[1.0], bootstrap=300)
    for task, entry in out["tasks"].items():
        low, high = entry["auc_ci"]
        assert low < entry["auc"] < high and high - low < 0.15, (task, entry)
    low, high = out["avg_auc_ci"]
    assert low < out["avg_auc"] < high
    # the same resamples for every representation: a copy of the features gets the same interval
    assert probe_tasks(x.copy(), labels, splits, c_grid=[1.0], bootstrap=300)["avg_auc_ci"] == [low, high]
    scores = y + rng.normal(0, 1.5, n)
    few, many = bootstrap_aucs(y[:100], scores[:100], 300, 0), bootstrap_aucs(y, scores, 300, 0)
    assert np.percentile(few, 97.5) - np.percentile(few, 2.5) > np.percentile(many, 97.5) - np.percentile(many, 2.5)
    assert abs(np.mean(many) - roc_auc_score(y, scores)) < 0.01
    assert "auc_ci" not in probe_tasks(x, labels, splits, c_grid=[1.0])["tasks"]["a"]


def test_split_is_seeded_and_stratified() -> None:
    y = np.array([0] * 70 + [1] * 30)
    a, b = split_users(y, 0.3, seed=3), split_users(y, 0.3, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert y[a[1]].sum() == 9 and len(a[1]) == 30
    assert not set(a[0]) & set(a[1])


def test_ks_equals_scipy_on_hand_example() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.35, 0.6, 0.3, 0.2, 0.1])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    # positives' CDF vs negatives' CDF: max gap at 0.6 -> 4/4 negatives <= 0.6, 1/4 positives -> 0.75
    assert ks_statistic(scores, labels) == pytest.approx(0.75)
    assert ks_statistic(scores, labels) == ks_2samp(scores[labels == 1], scores[labels == 0]).statistic
    with pytest.raises(InputError):
        ks_statistic(scores, np.ones(8))


# ------------------------------------------------------------------------------------ representations
def test_bag_of_codes_shapes_and_counts() -> None:
    rows_user = {"bill": np.array([0, 0, 2]), "tabular": np.array([1])}
    codes = {"bill": np.array([[1, 3], [1, 0], [2, 2]]), "tabular": np.array([[0, 3]])}
    bag = bag_of_codes(rows_user, codes, n_users=3, sources=["bill", "spm", "tabular"], num_codes=4)
    assert bag.shape == (3, 3 * 2 * 4)
    dense = bag.toarray()
    # user 0, bill level 0 code 1 twice; level 1 codes 3 and 0 once
    assert dense[0, (0 * 2 + 0) * 4 + 1] == 2
    assert dense[0, (0 * 2 + 1) * 4 + 3] == 1 and dense[0, (0 * 2 + 1) * 4 + 0] == 1
    assert dense[1, (2 * 2 + 1) * 4 + 3] == 1  # tabular is the third source
    assert dense.sum(axis=1).tolist() == [4, 2, 2]
    logged = bag_of_codes(rows_user, codes, n_users=3, sources=["bill", "spm", "tabular"], num_codes=4, transform="log1p")
    assert logged.toarray()[0, 1] == pytest.approx(np.log(3))
    with pytest.raises(InputError):
        bag_of_codes(rows_user, codes, n_users=3, sources=["bill"], num_codes=3)


def test_mean_embeddings_and_histories() -> None:
    rows_user = {"a": np.array([0, 0, 1]), "b": np.array([1])}
    x = {"a": np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]]), "b": np.array([[7.0]])}
    out = mean_embeddings(rows_user, x, n_users=3, sources=["a", "b"], dims={"a": 2, "b": 1})
    np.testing.assert_allclose(out, [[2, 1, 0], [5, 5, 7], [0, 0, 0]])
    days = {"a": np.array([3, 1, 0]), "b": np.array([0])}
    codes = {"a": np.array([[1, 1], [2, 2], [3, 3]]), "b": np.array([[4, 4]])}
    hist = token_histories(rows_user, days, codes, n_users=3, sources=["a", "b"], max_steps=8)
    assert hist.codes.shape == (3, 2, 2)
    assert hist.codes[0, :, 0].tolist() == [2, 1]  # day order: day 1 then day 3
    assert hist.source_ids[1].tolist() == [0, 1] and hist.mask[2].sum() == 0
    early = token_histories(rows_user, days, codes, n_users=3, sources=["a", "b"], max_day=2)
    assert early.mask[0].sum() == 1


# ------------------------------------------------------------------------------------ MaskNet + HR@k
def test_hit_rate_definition_on_hand_example() -> None:
    users = np.array([1, 1, 1, 1, 2, 2, 2, 3, 3])
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.9, 0.5, 0.4, 0.3])
    clicked = np.array([1, 0, 1, 0, 1, 0, 0, 0, 0])
    # user 1: ranks 0.9 (hit), 0.8, 0.7, 0.1 (clicked, rank 4) -> HR@2 = 1/2; user 2: clicked at rank 3 -> 0
    # user 3 has no click and is left out
    assert hit_rate_at_k(users, scores, clicked, 2) == pytest.approx((0.5 + 0.0) / 2)
    assert hit_rate_at_k(users, scores, clicked, 3) == pytest.approx((0.5 + 1.0) / 2)
    assert hit_rate_at_k(users, scores, clicked, 10) == pytest.approx(1.0)
    with pytest.raises(InputError):
        hit_rate_at_k(users, scores, np.zeros(9), 2)


def _synthetic_ctr(n: int, seed: int) -> tuple[CTRData, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 50, n)
    taste = users % 5                    # hidden user taste, only visible through the tokens
    items = rng.integers(0, 20, n)
    item_cat = items % 5
    p = np.where(taste == item_cat, 0.7, 0.1)
    clicked = (rng.random(n) < p).astype(np.int64)
    fields = np.stack([users % 2, items, item_cat], axis=1).astype(np.int64)
    return CTRData(fields=fields, users=users.astype(np.int64), clicked=clicked, user_ids=users.astype(np.int64)), taste


def test_masknet_learns_a_synthetic_ctr_task() -> None:
    train, _ = _synthetic_ctr(4000, 0)
    test, _ = _synthetic_ctr(1500, 1)
    taste = np.arange(50) % 5
    bags = np.stack([taste, (taste + 1) % 5], axis=1)[:, :, None]  # 2 token fields, bag of 1
    result = train_masknet(train, test, [2, 20, 5], bags=bags, token_vocab=5, embed_dim=8, num_blocks=2,
                           block_dim=32, epochs=6, batch_size=256, lr=3e-3, seed=0)
    auc = roc_auc_score(test.clicked, predict(result.model, test, bags))
    assert auc > 0.75
    assert len(result.history) == 6 and result.best_epoch >= 1


def test_masknet_shapes_and_modes() -> None:
    for mode in ("serial", "parallel"):
        model = MaskNet([3, 4], embed_dim=4, num_blocks=2, block_dim=8, token_fields=2, token_vocab=5, mode=mode)
        fields = torch.tensor([[0, 1], [2, 3]])
        tokens = torch.tensor([[[1, -1], [4, 4]], [[-1, -1], [0, 2]]])
        assert model(fields, tokens).shape == (2,)
    with pytest.raises(InputError):
        MaskNet([3], mode="deep")


def test_user_token_bags_keep_most_recent() -> None:
    rows_user = {"a": np.array([0, 0, 0, 1])}
    codes = {"a": np.array([[1, 5], [2, 6], [3, 7], [4, 8]])}
    bags = user_token_bags(rows_user, codes, n_users=3, sources=["a"], max_bag=2)
    assert bags.shape == (3, 2, 2)
    assert bags[0, 0].tolist() == [2, 3] and bags[0, 1].tolist() == [6, 7]
    assert bags[1, 0].tolist() == [4, -1] and (bags[2] == -1).all()


# ------------------------------------------------------------------------------------ config
def test_eval_config_errors_name_the_key(tmp_path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("probe:\n  test_size: 1.5\n")
    with pytest.raises(ConfigError, match=r"probe\.test_size"):
        load_eval_config(path)
    path.write_text("masknet:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"masknet\.epochz: unknown key"):
        load_eval_config(path)
    path.write_text("alignment:\n  task_sets: [S, X]\n")
    with pytest.raises(ConfigError, match=r"alignment\.task_sets"):
        load_eval_config(path)
    path.write_text("ablations:\n  codebook_designs:\n    - {name: a, variant: union, shared_levels: 1, specific_levels: 1, num_codes: 8, code_dim: 4}\n")
    with pytest.raises(ConfigError, match=r"ablations\.codebook_designs\.0\.variant"):
        load_eval_config(path)


def test_repo_eval_config_loads() -> None:
    from pathlib import Path

    cfg = load_eval_config(Path(__file__).resolve().parents[2] / "conf" / "eval.yaml")
    assert cfg.tasks == ["takeout", "purchasing_power", "money_laundering", "games"]
    assert {d.variant for d in cfg.ablations.codebook_designs} >= {"shared_only", "specific_only", "multiview"}
