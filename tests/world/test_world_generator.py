"""The pure generator (no Spark): determinism, independence of users, label rates, trait
signal, malformed rows and the rec split."""
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from pipelines.world import generate_user, generate_world_frames, load_world_config
from pipelines.world.generator import CATEGORIES, SOURCES
from pipelines.world.outcomes import events_frame, labels_frame

CONF = Path(__file__).resolve().parents[2] / "conf" / "world"


def tiny(**overrides):
    return load_world_config(CONF / "tiny.yaml", overrides)


def test_same_seed_same_user():
    cfg = tiny()
    a, b = generate_user(cfg, 3), generate_user(cfg, 3)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.rec_impressions, b.rec_impressions)
    assert a.profile == b.profile and a.labels == b.labels


def test_different_seed_differs():
    a = generate_world_frames(tiny())["raw_events"]
    b = generate_world_frames(tiny(seed=8))["raw_events"]
    assert not a["text"].reset_index(drop=True).equals(b["text"].reset_index(drop=True))


def test_user_does_not_depend_on_batch():
    cfg = tiny()
    batch = events_frame(cfg, [1, 2, 3, 4, 5])
    alone = events_frame(cfg, [4])
    pd.testing.assert_frame_equal(batch[batch.user_id == 4].reset_index(drop=True), alone)


def test_history_is_stable_when_world_is_extended():
    """Day streams use calendar days: a longer world keeps the shorter world's events."""
    short = events_frame(tiny(), range(1, 11))
    long = events_frame(tiny(n_days=4), range(1, 11))
    kept = long[long.event_date <= tiny().end_date].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, short)


def test_clean_events_are_well_formed():
    cfg = tiny(n_users=60)
    ev = generate_world_frames(cfg)["raw_events"]
    assert len(ev) > 50 and ev["bad_kind"].isna().all()
    assert set(ev.source) <= set(SOURCES)
    assert (ev.text.str.len() > 0).all()
    assert (ev.event_ts.dt.date == ev.event_date).all()
    assert ev.event_date.min() >= cfg.start_date and ev.event_date.max() <= cfg.end_date
    bill = ev.source == "bill"
    assert ev.loc[bill, "amount"].notna().all() and (ev.loc[bill, "amount"] > 0).all()
    assert set(ev.loc[bill, "status"]) <= {"success", "failed", "refunded"}
    assert ev.loc[~bill, "amount"].isna().all() and ev.loc[~bill, "status"].isna().all()


def test_profile_ranges():
    prof = generate_world_frames(tiny(n_users=200))["user_profile"]
    assert len(prof) == 200 and prof.user_id.is_unique
    assert (prof.as_of == tiny().start_date).all()
    assert set(prof.gender) <= {"F", "M", "U"} and set(prof.device_os) <= {"ios", "android", "harmonyos"}
    assert prof.city_tier.between(1, 5).all() and prof.credit_score.between(300, 900).all()
    assert (prof.engagement >= 0).all() and (prof.avg_balance >= 0).all()
    assert prof.engagement.nunique() > 190  # collisions are ordered by it: few ties


LABEL_RANGES = {"takeout": (0.20, 0.45), "purchasing_power": (0.20, 0.40),
                "money_laundering": (0.01, 0.05), "games": (0.10, 0.30)}


@pytest.mark.parametrize("overrides", [{}, {"seed": 123, "label_window_days": 3}])
def test_label_rates_in_ranges(overrides):
    cfg = tiny(n_users=400, **overrides)
    labels = labels_frame(cfg, cfg.user_ids())
    assert len(labels) == 4 * 400
    start, end = cfg.label_window
    assert (labels.label_window_start == start).all() and (labels.label_window_end == end).all()
    assert start > cfg.end_date  # labels look at the future, after the history
    rates = labels.groupby("task").label.mean()
    for task, (lo, hi) in LABEL_RANGES.items():
        assert lo <= rates[task] <= hi, (task, rates[task])


def test_takeout_users_order_more_food_delivery():
    cfg = tiny(n_users=300, n_days=7)
    frames = generate_world_frames(cfg)
    ev, labels = frames["raw_events"], frames["user_labels"]
    fd_label = next(c.label for c in CATEGORIES if c.name == "food_delivery")
    fd = ev[(ev.source == "bill") & ev.text.str.contains(f"({fd_label})", regex=False)]
    per_user = fd.groupby("user_id").size().reindex(list(cfg.user_ids()), fill_value=0)
    y = labels[labels.task == "takeout"].set_index("user_id").label.reindex(per_user.index)
    assert per_user[y == 1].mean() > 1.5 * per_user[y == 0].mean()


def test_gamers_and_launderers_leave_traces():
    cfg = tiny(n_users=300, n_days=7)
    frames = generate_world_frames(cfg)
    ev, labels = frames["raw_events"], frames["user_labels"].pivot(index="user_id", columns="task", values="label")
    games = ev[ev.text.str.contains("mobile games")].groupby("user_id").size().reindex(labels.index, fill_value=0)
    assert games[labels.games == 1].mean() > 2 * games[labels.games == 0].mean()
    night_fail = ev[ev.text.str.contains("new payee") & ev.status.isin(["failed", "refunded"])]
    flagged = night_fail.groupby("user_id").size().reindex(labels.index, fill_value=0)
    assert flagged[labels.money_laundering == 1].mean() > 5 * flagged[labels.money_laundering == 0].mean()


def test_malformed_rows_injected_and_counted():
    cfg = tiny(n_users=60, bad_row_rate=0.1)
    ev = generate_world_frames(cfg)["raw_events"]
    bad = ev[ev.bad_kind.notna()]
    counts = bad.bad_kind.value_counts().to_dict()
    assert set(counts) == {"null_user_id", "bad_source", "empty_text", "date_mismatch"}
    # each malformed row has exactly its one defect, and clean rows have none
    assert ev.user_id.isna().sum() == counts["null_user_id"]
    assert (~ev.source.isin(SOURCES)).sum() == counts["bad_source"]
    assert (ev.text == "").sum() == counts["empty_text"]
    assert (ev.event_ts.dt.date != ev.event_date).sum() == counts["date_mismatch"]
    # injection adds rows; the clean events are exactly those of a clean world
    clean = generate_world_frames(tiny(n_users=60))["raw_events"]
    pd.testing.assert_frame_equal(ev[ev.bad_kind.isna()].reset_index(drop=True), clean)


def test_only_requested_bad_kinds():
    ev = generate_world_frames(tiny(n_users=40, bad_row_rate=0.2, bad_row_kinds=["empty_text"]))["raw_events"]
    assert set(ev.bad_kind.dropna()) == {"empty_text"}


def test_rec_impressions_split():
    cfg = tiny(n_users=80)
    rec = generate_world_frames(cfg)["rec_impressions"]
    assert list(rec.columns) == ["user_id", "item_id", "item_category", "event_date", "clicked", "split"]
    first = cfg.rec_start_date
    train_end = first + dt.timedelta(days=cfg.rec_train_days - 1)
    assert rec.event_date.min() >= first > cfg.end_date
    assert rec.event_date.max() <= first + dt.timedelta(days=cfg.rec_days - 1)
    assert (rec.loc[rec.event_date <= train_end, "split"] == "train").all()
    ev = rec[rec.event_date > train_end]
    assert set(ev.split) == {"valid", "test"}
    # even and stratified on clicked: per (day, clicked) the two sides differ by at most one row
    sizes = ev.groupby(["event_date", "clicked", "split"]).size().unstack(fill_value=0)
    assert ((sizes["valid"] - sizes["test"]).abs() <= 1).all()
    assert 0.03 < rec.clicked.mean() < 0.4
    assert not rec.duplicated(["user_id", "item_id", "event_date"]).any()


def test_clicks_depend_on_traits():
    cfg = tiny(n_users=300)
    frames = generate_world_frames(cfg)
    rec, labels = frames["rec_impressions"], frames["user_labels"]
    gamers = set(labels[(labels.task == "games") & (labels.label == 1)].user_id)
    g = rec[rec.item_category == "games"]
    ctr_gamers = g[g.user_id.isin(gamers)].clicked.mean()
    ctr_others = g[~g.user_id.isin(gamers)].clicked.mean()
    assert ctr_gamers > 1.5 * ctr_others


def test_text_is_varied():
    ev = generate_world_frames(tiny(n_users=100))["raw_events"]
    for source in SOURCES:
        texts = ev.loc[ev.source == source, "text"]
        assert texts.nunique() >= 0.3 * len(texts) or texts.nunique() > 40, source
