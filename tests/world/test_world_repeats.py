"""``repeat_document_share``: the chosen share of a day's (user, source) documents repeats other
users' documents exactly; 0 repeats none; unset leaves the world as it was (pure Python, no Spark)."""
from __future__ import annotations

import collections

import pytest

from pipelines.world import load_world_config
from pipelines.world.generator import day_events, user_traits

DEMO = "conf/world/demo.yaml"


def _documents(config) -> list[tuple]:
    """One key per (user, source) of the last day that is equal exactly when the pipeline's
    documents are: the lines with their counts, in the document's order (count, first time, text)."""
    day = config.history_dates()[-1]
    out = []
    for user_id in config.user_ids():
        by_source = collections.defaultdict(list)
        for event in day_events(config, user_traits(config, user_id), day):
            by_source[event.source].append(event)
        for source, events in by_source.items():
            counts = collections.Counter(e.text for e in events)
            first = {text: min(e.ts for e in events if e.text == text) for text in counts}
            out.append((source, tuple(sorted(counts.items(), key=lambda kv: (-kv[1], first[kv[0]], kv[0])))))
    return out


def _repeat_share(documents: list[tuple]) -> float:
    return 1 - len(set(documents)) / len(documents)


@pytest.mark.parametrize("share, low, high", [(0.0, 0.0, 0.0), (0.5, 0.38, 0.5), (0.7, 0.58, 0.7)])
def test_repeat_share_is_what_was_asked(share, low, high):
    documents = _documents(load_world_config(DEMO, {"repeat_document_share": share}))
    assert len(documents) > 300
    assert low <= _repeat_share(documents) <= high


def test_unset_leaves_the_world_as_it_was():
    plain = load_world_config(DEMO)
    assert plain.repeat_document_share is None
    documents = _documents(plain)
    assert 0.05 < _repeat_share(documents) < 0.2     # the demo world's own repeats (issue #27: ~10 %)
    # the option's streams are its own: the users' other draws do not move
    repeated = load_world_config(DEMO, {"repeat_document_share": 0.5})
    assert user_traits(plain, 7).income == user_traits(repeated, 7).income


def test_share_out_of_range_fails_at_load():
    from u2qt_core.errors import ConfigError

    with pytest.raises(ConfigError, match="repeat_document_share"):
        load_world_config(DEMO, {"repeat_document_share": 1.5})
