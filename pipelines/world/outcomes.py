"""Outcomes of the synthetic world built on its behaviour (:mod:`.generator`): labels on a
window after the history (from the user's simulated future events plus latent traits and noise),
recommendation impressions (FOUNDv2 appendix C.1), and one user's / a batch of users' frames.

Same reproducibility contract as :mod:`.generator`: every draw comes from the user's (and day's)
own seeded stream, so nothing depends on which other users are generated alongside.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .config import WorldConfig
from .generator import (
    _CAT_BASE,
    CATEGORIES,
    EVENT_COLUMNS,
    LABEL_COLUMNS,
    N_CAT,
    PROFILE_COLUMNS,
    REC_COLUMNS,
    S_CATALOG,
    S_LABEL,
    S_REC,
    TASKS,
    UserTraits,
    _bad_rows,
    _rng,
    _zipf,
    day_events,
    profile_row,
    user_traits,
)


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------
def future_behaviour(config: WorldConfig, t: UserTraits) -> dict[str, float]:
    """Counts over the label window, scaled to a 7-day week (window-length invariant)."""
    start, _ = config.label_window
    fd = games = susp = n_bills = 0
    spend = log_ticket = 0.0
    for i in range(config.label_window_days):
        for e in day_events(config, t, start + dt.timedelta(days=i)):
            if e.category == "food_delivery" and e.source == "bill" and e.status == "success":
                fd += 1
            if e.category == "games":
                games += 1
            if e.suspicious and e.status != "success":
                susp += 1
            if e.source == "bill" and e.status == "success" and e.category not in ("finance", "laundering"):
                spend += float(e.amount or 0.0)
                log_ticket += math.log(max(float(e.amount or 0.0), 0.01))
                n_bills += 1
    k = 7.0 / config.label_window_days
    return {"fd_orders": fd * k, "game_events": games * k, "suspicious": susp * k, "spend": spend * k,
            "log_ticket": log_ticket / n_bills if n_bills else float("nan")}


# Intercepts calibrated on 1500-user worlds (label windows 3..14 days, inactive-day rates
# 0.3..0.8) for label rates near takeout 32%, purchasing_power 30%, games 18%.
LABEL_INTERCEPTS = {"takeout": -0.93, "purchasing_power": -1.48, "games": -1.8}


def label_scores(config: WorldConfig, t: UserTraits) -> dict[str, float]:
    """Noisy label logits before the intercept: latent trait + future-window behaviour + noise."""
    fb = future_behaviour(config, t)
    noise = _rng(config, S_LABEL, t.user_id).logistic(0.0, 1.0, size=3)
    ticket = 0.0 if math.isnan(fb["log_ticket"]) else fb["log_ticket"] - 4.5  # future price level (geo. mean)
    b, e = config.label_behaviour_weight, config.label_noise
    return {
        "takeout": 5.0 * (t.fd_habit - 0.4) + b * 1.0 * math.log1p(fb["fd_orders"]) + e * noise[0],
        "purchasing_power": 1.5 * t.income_z + b * 0.5 * ticket + e * noise[1],
        "games": 6.0 * (t.gaming - 0.3) + b * 0.6 * math.log1p(fb["game_events"]) + e * noise[2],
        "suspicious": fb["suspicious"],
    }


def user_labels(config: WorldConfig, t: UserTraits) -> list[dict]:
    sc = label_scores(config, t)
    rng = _rng(config, S_LABEL + 100, t.user_id)
    # Laundering: most latent launderers get caught (always when the future window shows failed
    # night transfers to new payees); a few innocent users are flagged too.
    ml = (sc["suspicious"] > 0 or rng.random() < 0.75) if t.launderer else rng.random() < 0.004
    values = {task: sc[task] + LABEL_INTERCEPTS[task] > 0 for task in LABEL_INTERCEPTS}
    values["money_laundering"] = ml
    start, end = config.label_window
    return [{"user_id": t.user_id, "task": task, "label": int(values[task]),
             "label_window_start": start, "label_window_end": end} for task in TASKS]


# --------------------------------------------------------------------------------------------
# Recommendation impressions (FOUNDv2 appendix C.1)
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def item_catalog(seed: int, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item category index, item quality, item popularity) for item_id = 1..n_items."""
    rng = np.random.default_rng([seed, S_CATALOG, n_items])
    cats = rng.choice(N_CAT, size=n_items, p=_CAT_BASE / _CAT_BASE.sum())
    quality = rng.normal(0.0, 0.5, size=n_items)
    popularity = _zipf(n_items, 0.9)[rng.permutation(n_items)]
    return cats, quality, popularity


def user_rec_impressions(config: WorldConfig, t: UserTraits) -> pd.DataFrame:
    """Impressions on the rec days; train rows carry split='train', eval rows split=None and a
    ``split_key`` (assign_rec_splits turns those into an even stratified valid/test split)."""
    cats, quality, popularity = item_catalog(config.seed, config.n_items)
    affinity = np.log(t.cat_pref * N_CAT)  # > 0 where the user likes the category more than average
    w = popularity * np.exp(0.5 * affinity[cats])  # the recommender already personalises a little
    cdf = np.cumsum(w / w.sum())
    base_logit = -2.5 + 0.9 * affinity[cats] + quality
    cols: dict[str, list] = {c: [] for c in ("user_id", "item_id", "item_category", "event_date", "clicked",
                                             "split", "split_key")}
    start = config.rec_start_date
    rate = config.rec_impressions_per_day * t.activity**0.5 / 0.9
    for i in range(config.rec_days):
        day = start + dt.timedelta(days=i)
        rng = _rng(config, S_REC, t.user_id, day.toordinal())
        n = int(rng.poisson(rate))
        if n == 0:
            continue
        idx = np.unique(np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), config.n_items - 1))
        logits = base_logit[idx] + rng.normal(0.0, 0.3, size=len(idx)) + (0.2 if day.weekday() >= 5 else 0.0)
        clicked = (rng.random(len(idx)) < 1.0 / (1.0 + np.exp(-logits))).astype(int)
        keys = rng.random(len(idx))
        is_train = i < config.rec_train_days
        for j, item in enumerate(idx):
            cols["user_id"].append(t.user_id)
            cols["item_id"].append(int(item) + 1)
            cols["item_category"].append(CATEGORIES[int(cats[item])].name)
            cols["event_date"].append(day)
            cols["clicked"].append(int(clicked[j]))
            cols["split"].append("train" if is_train else None)
            cols["split_key"].append(float(keys[j]))
    return pd.DataFrame(cols)


def assign_rec_splits(df: pd.DataFrame) -> pd.DataFrame:
    """Split the eval-day rows evenly into valid/test, stratified on ``clicked`` (and day):
    within each (event_date, clicked) group, rows ordered by (split_key, user_id, item_id)
    alternate valid, test, valid, ... Global, deterministic, independent of partitioning;
    the Spark writer does the same with a window."""
    df = df.copy()
    ev = df["split"].isna()
    if ev.any():
        e = df.loc[ev].sort_values(["event_date", "clicked", "split_key", "user_id", "item_id"])
        rank = e.groupby(["event_date", "clicked"]).cumcount()
        df.loc[e.index, "split"] = np.where(rank.to_numpy() % 2 == 0, "valid", "test")
    return df[REC_COLUMNS]


# --------------------------------------------------------------------------------------------
# One user, and batches of users
# --------------------------------------------------------------------------------------------
@dataclass
class UserWorld:
    traits: UserTraits
    profile: dict
    events: pd.DataFrame  # EVENT_COLUMNS + bad_kind (None for clean rows)
    labels: list[dict]
    rec_impressions: pd.DataFrame  # REC_COLUMNS (eval rows: split None) + split_key


def _events_frame(rows: list[tuple], kinds: list[str | None]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    df["user_id"] = df["user_id"].astype("Int64")
    df["event_ts"] = pd.to_datetime(df["event_ts"])
    df["amount"] = df["amount"].astype("float64")
    df["status"] = df["status"].astype(object)
    df["bad_kind"] = pd.Series(kinds, dtype=object)
    return df


def user_event_rows(config: WorldConfig, t: UserTraits) -> tuple[list[tuple], list[str | None]]:
    rows: list[tuple] = []
    kinds: list[str | None] = []
    for day in config.history_dates():
        evs = day_events(config, t, day)
        for e in evs:
            rows.append((t.user_id, e.ts, day, e.source, e.text, e.amount, e.status))
            kinds.append(None)
        for kind, row in _bad_rows(config, t, day, evs):
            rows.append(row)
            kinds.append(kind)
    return rows, kinds


def generate_user(config: WorldConfig, user_id: int) -> UserWorld:
    t = user_traits(config, user_id)
    rows, kinds = user_event_rows(config, t)
    return UserWorld(traits=t, profile=profile_row(config, t), events=_events_frame(rows, kinds),
                     labels=user_labels(config, t), rec_impressions=user_rec_impressions(config, t))


def events_frame(config: WorldConfig, user_ids) -> pd.DataFrame:
    rows: list[tuple] = []
    kinds: list[str | None] = []
    for uid in user_ids:
        r, k = user_event_rows(config, user_traits(config, int(uid)))
        rows += r
        kinds += k
    return _events_frame(rows, kinds)


def profile_frame(config: WorldConfig, user_ids) -> pd.DataFrame:
    return pd.DataFrame([profile_row(config, user_traits(config, int(u))) for u in user_ids], columns=PROFILE_COLUMNS)


def labels_frame(config: WorldConfig, user_ids) -> pd.DataFrame:
    rows = [r for u in user_ids for r in user_labels(config, user_traits(config, int(u)))]
    return pd.DataFrame(rows, columns=LABEL_COLUMNS)


def rec_frame(config: WorldConfig, user_ids) -> pd.DataFrame:
    parts = [user_rec_impressions(config, user_traits(config, int(u))) for u in user_ids]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: [] for c in REC_COLUMNS + ["split_key"]})
    return pd.concat(parts, ignore_index=True)


def generate_world_frames(config: WorldConfig, user_ids=None) -> dict[str, pd.DataFrame]:
    """The whole (small) world as pandas DataFrames, without Spark: raw_events (with bad_kind),
    user_profile, user_labels, rec_impressions (splits assigned). For tests and notebooks."""
    ids = list(config.user_ids() if user_ids is None else user_ids)
    return {
        "raw_events": events_frame(config, ids),
        "user_profile": profile_frame(config, ids),
        "user_labels": labels_frame(config, ids),
        "rec_impressions": assign_rec_splits(rec_frame(config, ids)),
    }
