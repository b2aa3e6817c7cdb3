"""Pure python/numpy generator of the synthetic multi-source world (no Spark here).

Reproducibility and parallel safety: every random draw comes from
``numpy.random.default_rng([seed, stream, user_id, day_ordinal])`` (or without the day for
per-user draws), so a user's traits, events, labels and impressions depend only on
(seed, user_id, day) and never on which other users are generated in the same process.
Day streams use the calendar day (``date.toordinal()``), so two worlds with the same seed and
overlapping dates agree on the shared days (a world extended by a few days keeps its past).

This module is the behaviour: traits, profiles and each day's events (with the malformed
copies a world may inject). Labels, recommendation impressions and the per-user / batch frames
are in :mod:`.outcomes`: labels are defined on a window after the history, from the user's
events on those future days simulated with the same day streams (exactly what raw_events would
hold if the world were extended), mixed with the latent traits plus noise.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass, field

import numpy as np

from pipelines.lake.schemas import RAW_EVENTS_SCHEMA, REC_IMPRESSIONS_SCHEMA, USER_LABELS_SCHEMA, USER_PROFILE_SCHEMA

from .config import WorldConfig
from .vocab import (
    CATEGORIES,
    CATEGORY_INDEX,
    GENERAL_APPS,
    GENERAL_MINIS,
    GENERAL_QUERIES,
    GENERAL_SPM,
    LAUNDER_MINIS,
    LAUNDER_QUERIES,
    LAUNDER_SPM,
    ROUND_AMOUNTS,
    SHELL_CITIES,
    SHELL_KINDS,
    SHELL_WORDS,
    SOURCES,
    SPM_ACTIONS,
)

# Random streams (second element of every seed sequence).
S_TRAITS, S_EVENTS, S_BAD, S_LABEL, S_REC, S_CATALOG = 1, 2, 3, 4, 5, 6

TASKS: tuple[str, ...] = ("takeout", "purchasing_power", "money_laundering", "games")
BILL_STATUSES: tuple[str, ...] = ("success", "failed", "refunded")
BAD_SOURCES: tuple[str, ...] = ("paybill", "unknown", "SPM", "mini_program", "ads")

# Column order of the generated frames: the input tables' schemas (pipelines/lake/schemas.py).
EVENT_COLUMNS = RAW_EVENTS_SCHEMA.fieldNames()
PROFILE_COLUMNS = USER_PROFILE_SCHEMA.fieldNames()
LABEL_COLUMNS = USER_LABELS_SCHEMA.fieldNames()
REC_COLUMNS = REC_IMPRESSIONS_SCHEMA.fieldNames()

N_CAT = len(CATEGORIES)
_CAT_BASE = np.array([
    {"food_delivery": 1.0, "groceries": 0.8, "dining_out": 0.5, "transport": 1.0, "games": 0.3,
     "video_music": 0.7, "shopping": 1.0, "electronics": 0.25, "luxury": 0.05, "travel": 0.25,
     "utilities": 0.4, "health": 0.3, "finance": 0.6, "education": 0.25}[c.name] for c in CATEGORIES])
_FD, _GAMES = CATEGORY_INDEX["food_delivery"], CATEGORY_INDEX["games"]
_SOURCE_INDEX = {s: i for i, s in enumerate(SOURCES)}
_WEEK_PATTERNS = np.array([
    [1.15, 1.15, 1.15, 1.15, 1.1, 0.7, 0.6],   # commuter: busy on weekdays
    [0.8, 0.8, 0.8, 0.85, 1.05, 1.4, 1.3],     # weekender
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],       # flat
])
_ACT_SIGMA = 0.9  # activity level is log-normal with mean 1: heavy right tail


def _rng(config: WorldConfig, stream: int, user_id: int, day: int | None = None) -> np.random.Generator:
    key = [config.seed, stream, user_id] if day is None else [config.seed, stream, user_id, day]
    return np.random.default_rng(key)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@functools.lru_cache(maxsize=256)
def _zipf(n: int, s: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def _pick(rng: np.random.Generator, options: tuple, s: float = 1.1):
    return options[int(rng.choice(len(options), p=_zipf(len(options), s)))]


# --------------------------------------------------------------------------------------------
# Traits and profile
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UserTraits:
    user_id: int
    age: int
    gender: str
    city_tier: int
    income: float  # monthly, CNY
    income_z: float
    fd_habit: float  # 0..1 food-delivery habit
    gaming: float  # 0..1 gaming interest
    launderer: bool
    launder_intensity: float
    activity: float  # mean 1, heavy-tailed
    week: np.ndarray = field(repr=False)  # 7 weekday multipliers (Mon..Sun)
    source_mix: np.ndarray = field(repr=False)  # over SOURCES
    cat_pref: np.ndarray = field(repr=False)  # over CATEGORIES, sums to 1
    night_owl: float = 0.0
    device_os: str = "android"
    is_merchant: bool = False
    account_age_days: int = 0
    num_cards: int = 1
    avg_balance: float = 0.0
    credit_score: int = 600
    engagement: float = 0.0


def user_traits(config: WorldConfig, user_id: int) -> UserTraits:
    rng = _rng(config, S_TRAITS, user_id)
    age = int(np.clip(round(18 + rng.gamma(2.2, 9.0)), 18, 80))
    gender = str(rng.choice(["F", "M", "U"], p=[0.48, 0.48, 0.04]))
    city_tier = int(rng.choice([1, 2, 3, 4, 5], p=[0.15, 0.25, 0.25, 0.2, 0.15]))
    young_z = (35.0 - age) / 12.0
    prime = 1.0 - abs(age - 42) / 25.0
    log_inc = math.log(7000.0) + 0.12 * (3 - city_tier) + 0.25 * prime + rng.normal(0.0, 0.55)
    income = float(math.exp(log_inc))
    income_z = (log_inc - math.log(7000.0)) / 0.6
    fd_habit = _sigmoid(-0.5 + 0.55 * young_z + 0.25 * (3 - city_tier) + 0.2 * income_z + rng.normal(0.0, 1.1))
    gaming = _sigmoid(-1.5 + 0.9 * young_z + 0.7 * (gender == "M") + rng.normal(0.0, 1.2))
    launderer = bool(rng.random() < config.launderer_rate)
    launder_intensity = float(rng.uniform(0.5, 1.0)) if launderer else 0.0
    activity = float(np.clip(rng.lognormal(-0.5 * _ACT_SIGMA**2, _ACT_SIGMA), 0.03, 20.0))
    week = _WEEK_PATTERNS[rng.choice(3, p=[0.45, 0.3, 0.25])] * rng.gamma(12.0, 1 / 12.0, size=7)
    week = week / week.mean()
    night_owl = float(np.clip(0.6 * gaming + rng.normal(0.0, 0.15) + (0.3 if launderer else 0.0), 0.0, 1.0))

    weights = np.array([config.source_weights[s] for s in SOURCES])
    base_src = np.where(weights > 0, weights + 1e-3, 0.0)      # a 0-weight source never appears
    mix = np.zeros(len(SOURCES))
    mix[weights > 0] = rng.dirichlet(25.0 * base_src[weights > 0] / base_src.sum())
    mix = mix * np.array([1.0 + 0.8 * launderer, 1.0, 1.0 + 0.3 * gaming, 1.0 + 0.8 * gaming, 1.0 + 0.3 * gaming])
    mix = mix / mix.sum()

    shift = np.zeros(N_CAT)
    ci = CATEGORY_INDEX
    shift[ci["food_delivery"]] = 4.5 * (fd_habit - 0.4)
    shift[ci["groceries"]] = -1.0 * (fd_habit - 0.4)
    shift[ci["dining_out"]] = 0.7 * income_z
    shift[ci["games"]] = 4.5 * (gaming - 0.3)
    shift[ci["video_music"]] = 0.8 * (gaming - 0.3) + 0.25 * young_z
    shift[ci["electronics"]] = 0.7 * income_z + 0.6 * gaming
    shift[ci["luxury"]] = 1.8 * income_z
    shift[ci["travel"]] = 1.0 * income_z
    shift[ci["finance"]] = 0.3 * income_z + (0.8 if launderer else 0.0)
    shift[ci["education"]] = 0.3 * (age > 30) - 0.2
    pref = _CAT_BASE * np.exp(shift) * rng.gamma(3.0, 1 / 3.0, size=N_CAT)
    pref = pref / pref.sum()

    p_ios = _sigmoid(-0.6 + 0.9 * income_z)
    u_os = rng.random()
    device_os = "ios" if u_os < p_ios else ("harmonyos" if rng.random() < 0.3 else "android")
    is_merchant = bool(rng.random() < (0.35 if launderer else 0.04))
    account_age_days = int(np.clip(rng.gamma(2.0, 300.0 + 25.0 * (age - 18)), 1, 7300))
    num_cards = int(np.clip(rng.poisson(1.0 + 0.7 * max(income_z, 0.0) + 0.3 * launderer), 0, 12) + 1)
    avg_balance = float(round(income * rng.lognormal(0.0, 0.9) * (0.5 + account_age_days / 3650.0), 2))
    credit_score = int(np.clip(round(640 + 55 * income_z + 1.2 * (age - 35) + rng.normal(0, 45)
                                     - (70 if launderer else 0)), 300, 900))
    engagement = float(round(activity * (0.6 + min(account_age_days, 3650) / 3650.0) * rng.gamma(4.0, 0.25), 6))

    return UserTraits(
        user_id=user_id, age=age, gender=gender, city_tier=city_tier, income=income, income_z=income_z,
        fd_habit=fd_habit, gaming=gaming, launderer=launderer, launder_intensity=launder_intensity,
        activity=activity, week=week, source_mix=mix, cat_pref=pref, night_owl=night_owl,
        device_os=device_os, is_merchant=is_merchant, account_age_days=account_age_days, num_cards=num_cards,
        avg_balance=avg_balance, credit_score=credit_score, engagement=engagement,
    )


def profile_row(config: WorldConfig, t: UserTraits) -> dict:
    return {
        "user_id": t.user_id, "as_of": config.start_date, "age": t.age, "gender": t.gender,
        "city_tier": t.city_tier, "account_age_days": t.account_age_days, "num_cards": t.num_cards,
        "avg_balance": t.avg_balance, "credit_score": t.credit_score, "device_os": t.device_os,
        "is_merchant": t.is_merchant, "engagement": t.engagement,
    }


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    ts: dt.datetime
    source: str
    text: str
    category: str  # category name, "general" or "laundering" (internal, not written)
    amount: float | None = None
    status: str | None = None
    suspicious: bool = False  # laundering-pattern bill (internal)


def _fmt_amount(x: float) -> str:
    return f"{x:.2f}"


def _price(rng: np.random.Generator, lo: float, hi: float, income_z: float) -> float:
    u = _sigmoid(math.log((q := rng.random() * 0.98 + 0.01) / (1 - q)) + 0.7 * income_z)
    p = lo * (hi / lo) ** u
    if rng.random() < 0.3:  # shop-style prices: 29.90, 199.00
        p = math.floor(p) + (0.9 if p > 10 else 0.0)
    return round(max(p, 0.5), 2)


def _bill_text(rng, amount: float, item: str, merchant: str, label: str, status: str) -> str:
    a = _fmt_amount(amount)
    r = rng.random()
    if r < 0.6:
        return f"Paid {a} for {item} at {merchant} ({label}), status {status}"
    if r < 0.8:
        return f"{merchant} ({label}): {item}, {a} CNY, {status}"
    return f"Payment {status}: {item} from {merchant}, {a} yuan ({label})"


def _shell_name(rng) -> str:
    return f"{_pick(rng, SHELL_CITIES, 0.5)} {_pick(rng, SHELL_WORDS, 0.3)} {_pick(rng, SHELL_KINDS, 0.6)}"


def _hour(rng, cat_hours: tuple[float, ...], night_owl: float) -> int:
    h = np.asarray(cat_hours, dtype=float).copy()
    h[[22, 23, 0, 1, 2]] *= 1.0 + 3.0 * night_owl
    return int(rng.choice(24, p=h / h.sum()))


def _make_ts(rng, day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, int(rng.integers(60)), int(rng.integers(60)))


def _category_event(rng, t: UserTraits, day: dt.date, source: str, cat_idx: int) -> Event:
    c = CATEGORIES[cat_idx]
    ts = _make_ts(rng, day, _hour(rng, c.hours, t.night_owl))
    if source == "bill":
        prices = np.array([math.sqrt(lo * hi) for _, lo, hi in c.items])
        w = _zipf(len(c.items), 0.8) * prices ** (0.35 * t.income_z)
        item, lo, hi = c.items[int(rng.choice(len(c.items), p=w / w.sum()))]
        merchant = _pick(rng, c.merchants)
        amount = _price(rng, lo, hi, t.income_z)
        status = str(rng.choice(BILL_STATUSES, p=[0.95, 0.03, 0.02]))
        return Event(ts, source, _bill_text(rng, amount, item, merchant, c.label, status), c.name, amount, status)
    if source == "spm":
        text = f"Alipay home > {_pick(rng, c.spm)}"
        action = SPM_ACTIONS[int(rng.integers(len(SPM_ACTIONS)))]
        return Event(ts, source, f"{text} > {action}" if action else text, c.name)
    if source == "mini":
        name = _pick(rng, c.minis)
        if rng.random() < 0.3:
            entry = ("home page", "search", "scan", "recent list", "a shared link")[int(rng.integers(5))]
            return Event(ts, source, f"Opened mini-program {name} from {entry}", c.name)
        return Event(ts, source, f"Opened mini-program {name}", c.name)
    if source == "app":
        name = _pick(rng, c.apps)
        if rng.random() < 0.4:
            scale = 40.0 if c.name in ("games", "video_music") else 12.0
            minutes = max(1, int(rng.gamma(1.5, scale / 1.5)))
            return Event(ts, source, f"Used app {name} ({c.label}) for {minutes} min", c.name)
        return Event(ts, source, f"Used app {name} ({c.label})", c.name)
    # search
    q = _pick(rng, c.queries, 0.9)
    r = rng.random()
    if r < 0.12:
        q = f"{q} near me" if "near" not in q else q
    elif r < 0.2:
        q = f"{q} 2026"
    return Event(ts, source, f"search: {q}", c.name)


def _general_event(rng, t: UserTraits, day: dt.date, source: str) -> Event:
    ts = _make_ts(rng, day, _hour(rng, _GENERAL_HOURS, t.night_owl))
    if source == "spm":
        return Event(ts, source, f"Alipay home > {_pick(rng, GENERAL_SPM)}", "general")
    if source == "mini":
        return Event(ts, source, f"Opened mini-program {_pick(rng, GENERAL_MINIS)}", "general")
    if source == "app":
        return Event(ts, source, f"Used app {_pick(rng, GENERAL_APPS)} (tools)", "general")
    return Event(ts, source, f"search: {_pick(rng, GENERAL_QUERIES)}", "general")


_GENERAL_HOURS = tuple(0.2 if h < 7 else 1.0 for h in range(24))


def _transfer_event(rng, t: UserTraits, day: dt.date, suspicious: bool) -> Event:
    """A transfer bill line. Suspicious ones: round amounts, new opaque payees, at night, often failing."""
    if suspicious:
        hour = int(rng.choice([0, 1, 2, 3, 4, 23]))
        amount = float(ROUND_AMOUNTS[int(rng.choice(len(ROUND_AMOUNTS), p=_zipf(len(ROUND_AMOUNTS), 0.6)))])
        status = str(rng.choice(BILL_STATUSES, p=[0.4, 0.35, 0.25]))
        payee = f"{_shell_name(rng)} (new payee)"
    else:
        hour = int(rng.integers(8, 22))
        if t.is_merchant and rng.random() < 0.5:
            amount = float(rng.choice(ROUND_AMOUNTS[:6]))
            payee = "own bank card (merchant withdrawal)"
        elif rng.random() < 0.4:
            amount = float(rng.choice([100.0, 200.0, 500.0, 1000.0, 2000.0, 3000.0]))
            payee = ("landlord", "a friend", "family member", "roommate")[int(rng.integers(4))]
        else:
            amount = round(float(rng.lognormal(5.0, 1.0)), 2)
            payee = ("a friend", "family member", "colleague", "own bank card")[int(rng.integers(4))]
        status = str(rng.choice(BILL_STATUSES, p=[0.95, 0.04, 0.01]))
    ts = _make_ts(rng, day, hour)
    a = _fmt_amount(amount)
    if rng.random() < 0.7:
        text = f"Transferred {a} to {payee} (transfer), status {status}"
    else:
        text = f"Transfer {status}: {a} yuan to {payee}"
    return Event(ts, "bill", text, "laundering" if suspicious else "finance", amount, status, suspicious)


def day_events(config: WorldConfig, t: UserTraits, day: dt.date) -> list[Event]:
    """The user's clean events on one calendar day, time-ordered (empty on inactive days)."""
    rng = _rng(config, S_EVENTS, t.user_id, day.toordinal())
    p_active = (1.0 - config.inactive_day_rate) * t.activity**0.6 / 0.88 * t.week[day.weekday()]
    if rng.random() >= min(p_active, 0.97):
        return []
    n = 1 + int(rng.poisson(max(config.mean_events_per_active_day - 1.0, 0.0) * t.activity**0.5 / 0.9))
    # Daily focus: the day leans on a few categories (so documents have a theme).
    day_pref = t.cat_pref * rng.gamma(1.2, 1 / 1.2, size=N_CAT)
    day_pref = day_pref / day_pref.sum()
    sources = rng.choice(len(SOURCES), size=n, p=t.source_mix)
    events: list[Event] = []
    for si in sources:
        source = SOURCES[int(si)]
        if source == "bill" and rng.random() < 0.05 + 0.1 * t.is_merchant:
            events.append(_transfer_event(rng, t, day, suspicious=False))
        elif source != "bill" and rng.random() < 0.18:
            events.append(_general_event(rng, t, day, source))
        elif t.launderer and source != "bill" and rng.random() < 0.25 * t.launder_intensity:
            ts = _make_ts(rng, day, int(rng.choice([0, 1, 2, 3, 22, 23])))
            if source == "spm":
                text = f"Alipay home > {_pick(rng, LAUNDER_SPM, 0.5)}"
            elif source == "mini":
                text = f"Opened mini-program {_pick(rng, LAUNDER_MINIS, 0.5)}"
            elif source == "search":
                text = f"search: {_pick(rng, LAUNDER_QUERIES, 0.5)}"
            else:
                text = f"Used app {_pick(rng, ('Bank Card Manager', 'Alipay Business', 'Cross-border Pay'))} (finance)"
            events.append(Event(ts, source, text, "laundering"))
        else:
            events.append(_category_event(rng, t, day, source, int(rng.choice(N_CAT, p=day_pref))))
    if t.launderer and rng.random() < 0.6 * t.launder_intensity:
        for _ in range(1 + int(rng.poisson(1.5))):
            events.append(_transfer_event(rng, t, day, suspicious=True))
    if config.repeat_document_share is not None:
        from .repeats import repeat_documents

        events = repeat_documents(config, t.user_id, day, events, traits=user_traits, category_event=_category_event)
    if config.vocabulary_shift is not None:
        from .shift import shift_vocabulary

        events = shift_vocabulary(config, t.user_id, day, events)
    events.sort(key=lambda e: (e.ts, e.source, e.text))
    return events


def _bad_rows(config: WorldConfig, t: UserTraits, day: dt.date, events: list[Event]) -> list[tuple]:
    """Malformed copies of some events: (kind, row) with exactly one defect each."""
    if config.bad_row_rate <= 0 or not events:
        return []
    rng = _rng(config, S_BAD, t.user_id, day.toordinal())
    out = []
    hit = rng.random(len(events)) < config.bad_row_rate
    for e, h in zip(events, hit):
        if not h:
            continue
        kind = config.bad_row_kinds[int(rng.integers(len(config.bad_row_kinds)))]
        uid, source, text, date = t.user_id, e.source, e.text, day
        if kind == "null_user_id":
            uid = None
        elif kind == "bad_source":
            source = BAD_SOURCES[int(rng.integers(len(BAD_SOURCES)))]
        elif kind == "empty_text":
            text = ""
        else:  # date_mismatch: stay inside the history window when it has room
            step = -1 if day > config.start_date else 1
            if day == config.start_date and config.n_days == 1:
                step = 1
            date = day + dt.timedelta(days=step)
        out.append((kind, (uid, e.ts, date, source, text, e.amount, e.status)))
    return out
