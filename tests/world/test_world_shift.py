"""The world option ``vocabulary_shift``: the same world before the date, the chosen sources moved
to the new product line after it (about ``share`` of their events), every other source untouched."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from pipelines.world import load_world_config
from pipelines.world.config import WorldConfig
from pipelines.world.generator import day_events, user_traits
from pipelines.world.shift import NEW_ITEMS

TINY = Path(__file__).resolve().parents[2] / "conf" / "world" / "tiny.yaml"


def _events(config, day):
    return [e for u in range(config.user_id_start, config.user_id_start + config.n_users)
            for e in day_events(config, user_traits(config, u), day)]


def test_a_world_moves_from_its_date_on_in_the_chosen_sources_only():
    base = load_world_config(TINY).model_dump()
    base.update(n_users=120)
    world = WorldConfig.model_validate(base)
    moved = WorldConfig.model_validate({**base, "vocabulary_shift": {
        "from_date": world.start_date + dt.timedelta(days=1), "sources": ["search", "app"], "share": 0.5}})
    first, second = world.start_date, world.start_date + dt.timedelta(days=1)
    assert _events(world, first) == _events(moved, first)
    before, after = _events(world, second), _events(moved, second)
    assert [(e.ts, e.source) for e in before] == [(e.ts, e.source) for e in after]   # only texts move
    new = [any(item in b.text for item in NEW_ITEMS) for a, b in zip(before, after)]
    changed = [a.text != b.text for a, b in zip(before, after)]
    assert changed == new
    assert not any(c for c, e in zip(changed, after) if e.source not in ("search", "app"))
    shifted = [c for c, e in zip(changed, after) if e.source in ("search", "app")]
    assert 0.3 < sum(shifted) / len(shifted) < 0.7
