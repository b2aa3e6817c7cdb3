"""A world that moves (``vocabulary_shift``): from a date on, a share of the events of chosen
sources speak of things the world never mentioned before -- a new product line the tokenizer was
not trained on. What the night's drift check (:mod:`pipelines.night.drift`) is tested and shown
on: the shifted sources' code histograms move away from the training distribution, the rest stay.

Per event of a shifted source on or after ``from_date``, a draw from the user's own stream
(``S_SHIFT``, so the rest of the world is unchanged and days before the shift are identical to the
unshifted world's) replaces its text, with probability ``share``, by a line of the new vocabulary
in that source's style. Amounts, timestamps and categories stay (labels do not move).
"""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np

from .config import WorldConfig

S_SHIFT = 9     # random stream, after the generator's (1-6) and the repeats' (7-8)

#: the new product line: electric mobility and home energy, absent from every other vocabulary
NEW_ITEMS = ("e-scooter rental", "EV fast-charging session", "home battery lease", "solar panel monitoring",
             "bike-share monthly pass", "heat pump service plan", "EV insurance top-up", "charging card refill")
STYLE = {
    "bill": "Paid {amount} for {item}",
    "spm": "Alipay home > Green mobility > {item}",
    "mini": "Opened mini-program {item}",
    "app": "Used app {item} (mobility)",
    "search": "search: {item} near me",
}


def shift_vocabulary(config: WorldConfig, user_id: int, day: dt.date, events: list) -> list:
    """``events`` of one user's day with the shifted sources' texts moved to the new vocabulary
    (each with probability ``vocabulary_shift.share``) when ``day >= vocabulary_shift.from_date``."""
    shift = config.vocabulary_shift
    if shift is None or day < shift.from_date or not events:
        return events
    rng = np.random.default_rng([config.seed, S_SHIFT, user_id, day.toordinal()])
    out = []
    for event in events:
        if event.source in shift.sources and rng.random() < shift.share:
            item = NEW_ITEMS[int(rng.integers(len(NEW_ITEMS)))]
            amount = f"{event.amount:.2f}" if event.amount is not None else f"{rng.uniform(5, 80):.2f}"
            event = dataclasses.replace(event, text=STYLE[event.source].format(item=item, amount=amount))
        out.append(event)
    return out
