"""CTR evaluation on ``rec_impressions`` (FOUNDv2 appendix C, table 8 analogue): MaskNet on user
profile + item fields, with and without the users' token bags; AUC on the test impressions and
HR@k over each clicking test user's impressions plus sampled unshown items.

Inputs are pandas frames read by the pipeline: ``rec`` (``user_id, item_id, item_category,
event_date, clicked, split``) and ``profiles`` (the latest ``user_profile`` row per user, indexed
by ``user_id``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from u2qt_core.evaluation.config import MaskNetSettings
from u2qt_core.evaluation.tokenizers import Tokenized, num_codes

__all__ = ["QUANTILE_BINS", "profile_fields", "evaluate_ctr"]

log = logging.getLogger(__name__)

#: Numeric profile fields become this many quantile bins (index 0 = missing).
QUANTILE_BINS = 8
_NUMERIC_FIELDS = ("age", "account_age_days", "avg_balance", "credit_score", "engagement")
_CATEGORICAL_FIELDS = ("gender", "city_tier", "device_os", "is_merchant")
_MAX_CARDS = 8


def _qbins(values: pd.Series, n: int) -> np.ndarray:
    """Quantile bins 1..n (0 = missing)."""
    out = np.zeros(len(values), dtype=np.int64)
    ok = values.notna().to_numpy()
    if ok.any():
        ranks = values[ok].rank(method="first")
        out[ok] = pd.qcut(ranks, q=min(n, int(ok.sum())), labels=False).to_numpy(np.int64) + 1
    return out


def _categories(values: pd.Series) -> tuple[np.ndarray, int]:
    cat = pd.Categorical(values.astype("string").fillna("<na>"))
    return cat.codes.astype(np.int64), len(cat.categories)


def profile_fields(profiles: pd.DataFrame) -> tuple[np.ndarray, list[int], list[str]]:
    """User-profile fields of the CTR base model: one categorical index per field.
    Returns ``(fields int64 [n_users, n_fields], field sizes, field names)``."""
    cols, sizes, names = [], [], []
    for name in _NUMERIC_FIELDS:
        cols.append(_qbins(profiles[name].astype("float64"), QUANTILE_BINS))
        sizes.append(QUANTILE_BINS + 1)
        names.append(name)
    for name in _CATEGORICAL_FIELDS:
        codes, n = _categories(profiles[name])
        cols.append(codes)
        sizes.append(n)
        names.append(name)
    cols.append(np.clip(profiles["num_cards"].fillna(0).to_numpy(np.int64), 0, _MAX_CARDS))
    sizes.append(_MAX_CARDS + 1)
    names.append("num_cards")
    return np.stack(cols, axis=1), sizes, names


def evaluate_ctr(rec: pd.DataFrame, profiles: pd.DataFrame, main: Tokenized, settings: MaskNetSettings, *,
                 rows_user: dict[str, np.ndarray], user_ids: np.ndarray, sources: list[str], max_bag: int,
                 seed: int) -> dict:
    """MaskNet CTR (train = the ``train`` split, best epoch by ``valid`` AUC, scored on ``test``)
    with user-profile + item fields, with and without the user tokens (at most ``max_bag`` days
    of codes per (source, level) field).  Returns models, row counts and the protocol text."""
    from sklearn.metrics import roc_auc_score

    from u2qt_core.evaluation.masknet import CTRData, hit_rate_at_k, predict, train_masknet, user_token_bags

    m = settings
    user_fields, user_sizes, user_names = profile_fields(profiles.reindex(user_ids).reset_index())
    pos = pd.Series(np.arange(len(user_ids)), index=user_ids)
    item_cat = rec.drop_duplicates("item_id").set_index("item_id")["item_category"]
    cat_codes = {c: i + 1 for i, c in enumerate(sorted(item_cat.unique()))}
    n_items = int(rec["item_id"].max()) + 1
    sizes = user_sizes + [n_items, len(cat_codes) + 1]

    def frame_data(frame: pd.DataFrame) -> CTRData:
        users = pos.reindex(frame["user_id"]).fillna(-1).to_numpy(np.int64)
        ufields = np.where(users[:, None] >= 0, user_fields[np.maximum(users, 0)], 0)
        items = frame["item_id"].to_numpy(np.int64)
        cats = frame["item_id"].map(item_cat).map(cat_codes).fillna(0).to_numpy(np.int64)
        fields = np.concatenate([ufields, items[:, None], cats[:, None]], axis=1)
        return CTRData(fields=fields, users=users, clicked=frame["clicked"].to_numpy(np.int64),
                       user_ids=frame["user_id"].to_numpy(np.int64))

    train, valid, test = (frame_data(rec[rec["split"] == s]) for s in ("train", "valid", "test"))
    # HR@k candidates: each test user's test impressions + sampled unshown catalogue items
    rng = np.random.default_rng(seed)
    test_rows = rec[rec["split"] == "test"]
    universe = np.sort(item_cat.index.to_numpy(np.int64))
    extra = []
    for user, group in test_rows.groupby("user_id"):
        if not group["clicked"].any() or not m.sampled_negatives:
            continue
        pool = np.setdiff1d(universe, group["item_id"].to_numpy())
        pick = rng.choice(pool, size=min(m.sampled_negatives, len(pool)), replace=False)
        extra.append(pd.DataFrame({"user_id": user, "item_id": pick, "clicked": 0}))
    clicked_users = test_rows.groupby("user_id")["clicked"].transform("max") > 0
    candidates = frame_data(pd.concat([test_rows.loc[clicked_users, ["user_id", "item_id", "clicked"]], *extra],
                                      ignore_index=True))
    bags = user_token_bags(rows_user, main.codes, n_users=len(user_ids), sources=sources, max_bag=max_bag)
    models = {}
    for key, label, use_tokens in (("profile", "User profile + item", False),
                                   ("profile+tokens", "(+) U2QT tokens", True)):
        started = time.monotonic()
        result = train_masknet(
            train, valid, sizes, bags=bags if use_tokens else None, token_vocab=num_codes(main),
            embed_dim=m.embed_dim, num_blocks=m.num_blocks, block_dim=m.block_dim, reduction_ratio=m.reduction_ratio,
            epochs=m.epochs, batch_size=m.batch_size, lr=m.lr, weight_decay=m.weight_decay, seed=seed)
        scores = predict(result.model, test, bags if use_tokens else None)
        cand_scores = predict(result.model, candidates, bags if use_tokens else None)
        entry = {"label": label, "test_auc": float(roc_auc_score(test.clicked, scores)),
                 "valid_auc": result.valid_auc, "best_epoch": result.best_epoch, "history": result.history,
                 "seconds": round(time.monotonic() - started, 1)}
        for k in m.hr_ks:
            entry[f"hr@{k}"] = hit_rate_at_k(candidates.user_ids, cand_scores, candidates.clicked, k)
        models[key] = entry
        log.info("masknet %s: test AUC %.4f %s", key, entry["test_auc"],
                 {f"hr@{k}": round(entry[f"hr@{k}"], 4) for k in m.hr_ks})
    n_users_hr = int(pd.Series(candidates.user_ids).nunique())
    return {
        "models": models, "hr_ks": list(m.hr_ks),
        "rows": {"train": len(train), "valid": len(valid), "test": len(test), "hr_candidates": len(candidates)},
        "protocol": (
            f"rec_impressions: train = first days ({len(train)} impressions), valid {len(valid)} / test {len(test)} = "
            f"stratified halves of the last days (the world's split). Base features: user profile "
            f"({', '.join(user_names)}; numeric ones as {QUANTILE_BINS} quantile bins) + item_id + item_category. "
            f"(+) tokens adds one field per (source, level) = {len(sources)} x {main.levels} fields, each the mean "
            f"embedding of the codes the user got on their history days (at most {max_bag}). Serial MaskNet, "
            f"{m.num_blocks} blocks x {m.block_dim}, k={m.embed_dim}, reduction ratio {m.reduction_ratio}, Adam lr "
            f"{m.lr}, {m.epochs} epochs, best epoch by valid AUC. AUC over test impressions. HR@k: for each of the "
            f"{n_users_hr} test users with a click, candidates = their test impressions + {m.sampled_negatives} "
            f"sampled catalogue items they were not shown; HR@k = share of their clicked items ranked in the top k, "
            f"averaged over users."),
    }
