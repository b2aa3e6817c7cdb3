"""Token-tuple collisions and the engagement-ordered fallback suffix (FOUNDv2 eq. 9).

Two users can receive the same full token tuple.  The paper appends a special token ``<e_k>``
that ranks colliding users by engagement, preserving the business ordering.  This module is the
pure-numpy reference; the Spark job reproduces it with
``row_number() over (partition by tuple order by engagement desc, user_id asc) - 1``.
"""

from __future__ import annotations

import numpy as np

from u2qt_core.errors import InputError

__all__ = ["collision_suffixes", "collision_rate", "tuple_groups"]


def _as_tuples(tuples: np.ndarray) -> np.ndarray:
    arr = np.asarray(tuples)
    if arr.ndim != 2:
        raise InputError(f"tuples: expected a 2-D array [N, T], got shape {list(arr.shape)}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"tuples: expected integer codes, got dtype {arr.dtype}")
    return arr


def tuple_groups(tuples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group identical rows: tuples [N, T] -> (group id [N] int64, group size [N] int64)."""
    arr = _as_tuples(tuples)
    if arr.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    _, inverse, counts = np.unique(arr, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    return inverse, counts[inverse].astype(np.int64)


def collision_rate(tuples: np.ndarray) -> float:
    """Share of rows whose full tuple is shared with at least one other row (0.0 for no rows)."""
    _, sizes = tuple_groups(tuples)
    return float((sizes > 1).mean()) if sizes.size else 0.0


def collision_suffixes(tuples: np.ndarray, engagement: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
    """Rank of each row within its group of identical tuples -> suffix [N] int64.

    tuples [N, T] int (a user's full token tuple), engagement [N] float, user_ids [N] int64.
    Within a group, rows are ordered by engagement descending, ties by user_id ascending; the
    first gets 0, the next 1, ...  A row with a unique tuple gets 0.  NaN engagement is rejected
    (Spark orders NaN above every number, numpy below; refusing it keeps both sides equal).
    """
    arr = _as_tuples(tuples)
    n = arr.shape[0]
    engagement = np.asarray(engagement, dtype=np.float64).reshape(-1)
    user_ids = np.asarray(user_ids).reshape(-1)
    if engagement.shape[0] != n or user_ids.shape[0] != n:
        raise InputError(
            f"collision_suffixes: tuples has {n} rows but engagement has {engagement.shape[0]} "
            f"and user_ids {user_ids.shape[0]}"
        )
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    bad = np.flatnonzero(np.isnan(engagement))
    if bad.size:
        raise InputError(f"collision_suffixes: engagement is NaN in row {int(bad[0])} (user_id {user_ids[bad[0]]})")
    groups, _ = tuple_groups(arr)
    # np.lexsort sorts by the LAST key first: group, then engagement desc, then user_id asc.
    order = np.lexsort((user_ids, -engagement, groups))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    suffix = np.empty(n, dtype=np.int64)
    suffix[order] = np.arange(n, dtype=np.int64) - run_start
    return suffix
