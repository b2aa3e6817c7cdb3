"""Collision suffix reference (FOUNDv2 eq. 9): engagement desc, user_id asc, per identical tuple."""

from __future__ import annotations

import numpy as np
import pytest

from u2qt_core.collisions import collision_rate, collision_suffixes
from u2qt_core.errors import InputError


def test_hand_made_example_with_ties() -> None:
    tuples = np.array(
        [
            [1, 2, 3],  # A  user 10, eng 5.0
            [4, 5, 6],  # unique
            [1, 2, 3],  # A  user 7,  eng 9.0  -> most engaged
            [1, 2, 3],  # A  user 3,  eng 5.0  -> tie with user 10, lower id first
            [7, 7, 7],  # B  user 1,  eng 0.5
            [7, 7, 7],  # B  user 2,  eng 0.5  -> tie, id 1 before id 2
            [1, 2, 4],  # differs from A in the last token: unique
        ]
    )
    engagement = np.array([5.0, 1.0, 9.0, 5.0, 0.5, 0.5, 5.0])
    user_ids = np.array([10, 11, 7, 3, 1, 2, 12], dtype=np.int64)
    suffix = collision_suffixes(tuples, engagement, user_ids)
    assert suffix.tolist() == [2, 0, 0, 1, 0, 1, 0]
    assert collision_rate(tuples) == pytest.approx(5 / 7)


def test_deterministic_under_row_permutation() -> None:
    rng = np.random.default_rng(0)
    tuples = rng.integers(0, 3, size=(200, 2))
    engagement = rng.integers(0, 4, size=200).astype(float)  # many ties
    user_ids = rng.permutation(200).astype(np.int64)
    suffix = collision_suffixes(tuples, engagement, user_ids)
    perm = rng.permutation(200)
    suffix_perm = collision_suffixes(tuples[perm], engagement[perm], user_ids[perm])
    assert np.array_equal(suffix[perm], suffix_perm)
    # within each group the suffixes are exactly 0..n-1
    for row in np.unique(tuples, axis=0):
        members = np.flatnonzero((tuples == row).all(axis=1))
        assert sorted(suffix[members].tolist()) == list(range(members.size))


def test_edge_cases() -> None:
    assert collision_suffixes(np.zeros((0, 3), dtype=int), np.zeros(0), np.zeros(0, dtype=np.int64)).size == 0
    assert collision_rate(np.zeros((0, 3), dtype=int)) == 0.0
    assert collision_rate(np.array([[1], [2]])) == 0.0
    with pytest.raises(InputError, match="engagement is NaN in row 1"):
        collision_suffixes(np.array([[1], [1]]), np.array([1.0, np.nan]), np.array([1, 2]))
    with pytest.raises(InputError, match="3 rows but engagement has 2"):
        collision_suffixes(np.zeros((3, 1), dtype=int), np.zeros(2), np.zeros(3))
    with pytest.raises(InputError, match="2-D"):
        collision_rate(np.zeros(3, dtype=int))
