"""A world built to collide: groups of users with identical behaviour (same events, same profile
features) and different engagement, so the night's re-rank has real work to do.

Written as ``raw_events`` / ``user_profile`` Delta rows (the tables' own schemas) into a lake
that holds a trained tokenizer; the real pipeline then tokenizes it.

Two dates, D1 and D2:

* behaviour X (bill + search + profile A): users 10, 11, 12, 13 on D1 (engagement .9 .5 .7 NaN:
  suffixes 10->0, 12->1, 11->2, 13->3; a NaN engagement ranks as 0.0, never first);
* behaviour Y (app + mini + profile B): users 20, 21 on D1;
* users 1, 2, 3: each a source set nobody else has (never collide); user 30: spm only on D1;
  one blank bill line of user 1 on D1 (quarantined).

On D2 user 12 leaves group X for Y (new events and profile B), user 30 joins X (profile A,
engagement .6), user 10 stays in X with a lower engagement (.4, still above 13's NaN), and
users 11, 13, 20, 21 are not active: their suffixes change only because their groups changed.
"""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np

from pipelines.lake import tables
from pipelines.lake.lake import Lake
from tests.conftest import make_settings

D1, D2 = "2026-01-05", "2026-01-06"
GROUP_X_D2 = {10, 11, 13, 30}
GROUP_Y_D2 = {12, 20, 21}

_PROFILE_A = dict(age=34, gender="F", city_tier=2, account_age_days=900, num_cards=3, avg_balance=5200.0,
                  credit_score=710, device_os="ios", is_merchant=False)
_PROFILE_B = dict(age=52, gender="M", city_tier=4, account_age_days=120, num_cards=1, avg_balance=80.0,
                  credit_score=560, device_os="android", is_merchant=True)
_PROFILE_Z = dict(age=23, gender="U", city_tier=1, account_age_days=30, num_cards=2, avg_balance=900.0,
                  credit_score=640, device_os="harmonyos", is_merchant=False)

_X = [("bill", "Paid 32.50 for Braised pork rice at Laoxiang Kitchen (food delivery)", 32.5, "success"),
      ("bill", "Paid 32.50 for Braised pork rice at Laoxiang Kitchen (food delivery)", 32.5, "success"),
      ("bill", "Paid 12.00 for Metro card top-up (transport)", 12.0, "success"),
      ("search", "cheap flights to chengdu", None, None)]
_Y = [("app", "Opened Didi Chuxing for 14 minutes", None, None),
      ("mini", "Mini-program Hello Bike: unlocked a bike", None, None),
      ("mini", "Mini-program Hello Bike: unlocked a bike", None, None)]
_Z = [("spm", "Alipay home > Wealth > Fund details > buy", None, None)]
_UNIQUE = {
    1: [("bill", "Paid 999.00 for Noise cancelling headphones (electronics)", 999.0, "success")],
    2: [("spm", "Alipay home > Insurance > Car insurance quote", None, None),
        ("app", "Opened Keep for 40 minutes", None, None)],
    3: [("search", "how to renew a passport", None, None)],
}


def _events(user_id: int, day: str, lines) -> list[tuple]:
    d = dt.date.fromisoformat(day)
    return [(user_id, dt.datetime.combine(d, dt.time(9, i)), d, source, text, amount, status)
            for i, (source, text, amount, status) in enumerate(lines)]


def _profile(user_id: int, day: str, features: dict, engagement: float) -> tuple:
    row = {"user_id": user_id, "as_of": dt.date.fromisoformat(day), **features, "engagement": engagement}
    return tuple(row[f.name] for f in tables.USER_PROFILE.schema.fields)


def collide_rows() -> tuple[list[tuple], list[tuple]]:
    """(raw_events rows, user_profile rows) of the collide world, in the tables' column order."""
    events = []
    for uid in (10, 11, 12, 13):
        events += _events(uid, D1, _X)
    for uid in (20, 21):
        events += _events(uid, D1, _Y)
    for uid, lines in _UNIQUE.items():
        events += _events(uid, D1, lines) + _events(uid, D2, lines)
    events += _events(30, D1, _Z)
    events += _events(12, D2, _Y) + _events(30, D2, _X) + _events(10, D2, _X)
    events += _events(1, D1, [("bill", "   ", None, None)])   # quarantined: a forgotten user must leave quarantine too
    engagement_d1 = {10: .9, 11: .5, 12: .7, 13: float("nan"), 20: .3, 21: .8, 1: .2, 2: .4, 3: .6, 30: .1}
    profiles = [_profile(uid, D1, _PROFILE_A if uid in (10, 11, 12, 13) else _PROFILE_B if uid in (20, 21) else _PROFILE_Z, eng)
                for uid, eng in engagement_d1.items()]
    profiles += [_profile(12, D2, _PROFILE_B, .7), _profile(30, D2, _PROFILE_A, .6), _profile(10, D2, _PROFILE_A, .4)]
    return events, profiles


def write_collide_world(spark, trained_root: Path, root: Path):
    """A lake at ``root`` with the trained tokenizer of ``trained_root`` and the collide world as
    its ``raw_events`` / ``user_profile``; returns its settings."""
    shutil.copytree(trained_root / "model", root / "model")
    settings = make_settings(root / "lake", root / "model")
    events, profiles = collide_rows()
    for spec, rows in ((tables.RAW_EVENTS, events), (tables.USER_PROFILE, profiles)):
        writer = spark.createDataFrame(rows, spec.schema).write.format("delta").mode("overwrite")
        if spec.partition_by:
            writer = writer.partitionBy(*spec.partition_by)
        writer.save(Lake(spark, settings).path(spec.name))
    return settings


IDENTITY_VIEW = ["user_id", "as_of", "token_tuple", "sources_present", "engagement", "collision_suffix", "tokenizer_version"]


def identity_rows(spark, settings) -> list[tuple]:
    """``user_tokens`` without run ids, as sorted plain tuples (comparable across runs)."""
    frame = Lake(spark, settings).read("user_tokens").select(*IDENTITY_VIEW).orderBy("user_id")
    return [tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in frame.collect()]


def assert_consistent(spark, settings) -> dict[tuple, list[int]]:
    """Suffixes equal the numpy reference, are dense from 0 in every group and unique per
    (tuple, suffix); returns {tuple: user ids in suffix order}."""
    from u2qt_core.collisions import collision_suffixes

    rows = Lake(spark, settings).read("user_tokens").toPandas()
    expected = collision_suffixes(np.stack(rows["token_tuple"].to_numpy()).astype(np.int64),
                                  rows["engagement"].to_numpy(), rows["user_id"].to_numpy())
    assert rows["collision_suffix"].tolist() == expected.tolist()
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for uid, tup, suffix in zip(rows["user_id"], rows["token_tuple"], rows["collision_suffix"]):
        groups.setdefault(tuple(tup), []).append((int(suffix), int(uid)))
    for members in groups.values():
        assert sorted(s for s, _ in members) == list(range(len(members)))
    return {tup: [uid for _, uid in sorted(members)] for tup, members in groups.items()}
