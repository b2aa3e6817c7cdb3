"""Shared by the crash-matrix tests: copy a staged lake, crash publish after a commit point, and
the uninterrupted publish every healed lake is compared with."""
from __future__ import annotations

import shutil

import pytest

from pipelines.night import commit_points
from tests.conftest import make_settings
from tests.pipelines.collide_world import identity_rows
from tests.pipelines.lake_state import delta_versions, lake_state

#: the commits a publish of the collide world makes (no compacted history period, so no uncover)
REACHED = [p for p in commit_points.PUBLISH_COMMITS if p != "user_day_tokens.uncover"]


def copy_staged(src, dest):
    """A copy of the lake (tables + tokenizer) at ``src``; returns its settings."""
    shutil.copytree(src, dest)
    return make_settings(dest / "lake", dest / "model")


def crash_after(point, action) -> None:
    """Run ``action`` with ``point`` armed: it must die right after that commit."""
    with commit_points.crash_after(point), pytest.raises(commit_points.SimulatedCrash, match=point):
        action()


def uninterrupted(spark, staged_root, tmp_path, publish_all) -> dict:
    """The uninterrupted publish from the staged state: its tables, its lake's ``settings`` and
    ``publish_all``'s result, and a check that the commit points are every commit it made (a new
    commit without a point fails here)."""
    settings = copy_staged(staged_root, tmp_path / "uninterrupted")
    before = delta_versions(spark, settings)
    published = publish_all(settings)
    after = delta_versions(spark, settings)
    committed = {name: after[name] - before.get(name, -1) for name in after if after[name] != before.get(name)}
    assert committed == {name: 1 for name in REACHED}, committed
    return {"state": lake_state(spark, settings), "loose": lake_state(spark, settings, with_run_ids=False),
            "identities": identity_rows(spark, settings), "settings": settings, "published": published}
