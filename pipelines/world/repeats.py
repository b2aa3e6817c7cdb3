"""A chosen share of a day's documents as exact repeats of other users' documents
(``repeat_document_share``): what the night's document dedup (:mod:`pipelines.night.dedup`) is
benchmarked on.

Per (user, day, source) with events, a draw from the user's own stream (``S_REPEAT``, so the
rest of the world is unchanged) decides: with probability ``repeat_document_share`` the user's
events of that source are replaced by one of ``repeat_document_pool`` template event lists of
that (source, day) -- the same for every user who draws it (texts, amounts and timestamps alike,
so the built documents are byte-identical); otherwise the user's first event of that source gets
`` #u<user_id>`` appended, so that document cannot equal anyone else's by chance. The repeat
share of a day is then ``(chosen - distinct templates used) / documents``: about the setting once
a day has many more chosen documents than templates.

Like every draw of the generator, a template depends only on (seed, source, day, template).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Callable

import numpy as np

from .config import WorldConfig
from .vocab import CATEGORIES, SOURCES

S_REPEAT, S_TEMPLATE = 7, 8     # random streams, after the generator's S_TRAITS .. S_CATALOG (1-6)
_TEMPLATE_USER = 2**62          # template "users": above every real id (WorldConfig keeps ids below)


def template_events(config: WorldConfig, source: str, day: dt.date, k: int, *, traits: Callable,
                    category_event: Callable) -> list:
    """Template ``k`` of ``source`` on ``day``: 1 + Poisson(1) category events of that source, of
    the template user ``k`` (``traits`` / ``category_event``: the generator's, passed in so that
    this module imports nothing of it)."""
    key = (config.seed, config.launderer_rate, tuple(sorted(config.source_weights.items())), k)
    if key not in _TRAITS:
        _TRAITS[key] = traits(config, _TEMPLATE_USER + k)
    t = _TRAITS[key]
    rng = np.random.default_rng([config.seed, S_TEMPLATE, (SOURCES.index(source) + 1) * 1_000_000 + k, day.toordinal()])
    n = 1 + int(rng.poisson(1.0))
    return [category_event(rng, t, day, source, int(rng.choice(len(CATEGORIES), p=t.cat_pref))) for _ in range(n)]


_TRAITS: dict[tuple, object] = {}   # template users' traits, per world


def repeat_documents(config: WorldConfig, user_id: int, day: dt.date, events: list, *, traits: Callable,
                     category_event: Callable) -> list:
    """``events`` (one user's day, any order) with each source's events either replaced by a
    shared template (probability ``repeat_document_share``) or made unique to the user."""
    share = config.repeat_document_share
    if share is None or not events:
        return events
    rng = np.random.default_rng([config.seed, S_REPEAT, user_id, day.toordinal()])
    out: list = []
    for source in SOURCES:
        mine = [e for e in events if e.source == source]
        if not mine:
            continue
        if rng.random() < share:
            out.extend(template_events(config, source, day, int(rng.integers(config.repeat_document_pool)),
                                       traits=traits, category_event=category_event))
        else:
            out.append(dataclasses.replace(mine[0], text=f"{mine[0].text} #u{user_id}"))
            out.extend(mine[1:])
    return out
