"""User representations compared by the probes (one row per user, users in a fixed order).

Inputs are per source: ``rows_user[source]`` the user position (``0..n_users-1``) of each
(user, source, day) row, ``days[source]`` its day number, and either its codes ``[n, L]`` or its
continuous input ``[n, d]``.

* :func:`bag_of_codes` — tokens as a bag of codes: for every (source, level, code) the number of
  history days on which the user's row of that source got that code at that level;
* :func:`mean_embeddings` — the FOUND-style continuous baseline: mean encoder embedding per
  source over the user's days, sources concatenated (zeros for a source never seen);
* :func:`user_documents` + :func:`tfidf_features` — raw features: TF-IDF over the user's raw
  text (all documents of the history, concatenated);
* :func:`token_histories` — :class:`~u2qt_core.alignment.UserTokenHistories` for the alignment
  sequence model (steps ordered by day, then source order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from u2qt_core.alignment import UserTokenHistories
from u2qt_core.errors import InputError

__all__ = ["bag_of_codes", "mean_embeddings", "user_documents", "tfidf_features", "token_histories"]


def bag_of_codes(
    rows_user: dict[str, np.ndarray],
    codes: dict[str, np.ndarray],
    *,
    n_users: int,
    sources: Sequence[str],
    num_codes: int,
    transform: str = "counts",
) -> sparse.csr_matrix:
    """``[n_users, len(sources) * L * num_codes]`` counts; column
    ``(source_index * L + level) * num_codes + code``. ``transform="log1p"`` compresses counts."""
    levels = {c.shape[1] for s, c in codes.items() if s in sources and len(c)}
    if len(levels) > 1:
        raise InputError(f"sources have different numbers of levels: {sorted(levels)}")
    L = levels.pop() if levels else 1
    rows, cols = [], []
    for k, source in enumerate(sources):
        if source not in codes or not len(codes[source]):
            continue
        c = np.asarray(codes[source], dtype=np.int64)
        users = np.asarray(rows_user[source], dtype=np.int64)
        if c.shape[0] != users.shape[0]:
            raise InputError(f"source {source}: {c.shape[0]} code rows for {users.shape[0]} users")
        if c.min() < 0 or c.max() >= num_codes:
            raise InputError(f"source {source}: codes outside [0, {num_codes})")
        col = (k * L + np.arange(L)[None, :]) * num_codes + c
        rows.append(np.repeat(users, L))
        cols.append(col.reshape(-1))
    shape = (n_users, len(sources) * L * num_codes)
    if not rows:
        return sparse.csr_matrix(shape, dtype=np.float64)
    r, c = np.concatenate(rows), np.concatenate(cols)
    matrix = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=shape).tocsr()
    matrix.sum_duplicates()
    if transform == "log1p":
        matrix.data = np.log1p(matrix.data)
    elif transform != "counts":
        raise InputError(f"unknown transform {transform!r}")
    return matrix


def mean_embeddings(
    rows_user: dict[str, np.ndarray],
    x: dict[str, np.ndarray],
    *,
    n_users: int,
    sources: Sequence[str],
    dims: dict[str, int],
) -> np.ndarray:
    """``[n_users, sum(dims)]``: per source the mean of the user's rows (zeros if none)."""
    blocks = []
    for source in sources:
        block = np.zeros((n_users, dims[source]), dtype=np.float64)
        if source in x and len(x[source]):
            users = np.asarray(rows_user[source], dtype=np.int64)
            np.add.at(block, users, np.asarray(x[source], dtype=np.float64))
            counts = np.bincount(users, minlength=n_users).astype(np.float64)
            block /= np.maximum(counts, 1.0)[:, None]
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def user_documents(documents: pd.DataFrame, user_ids: Sequence[int], *, max_day: int | None = None) -> list[str]:
    """Per user (in ``user_ids`` order) all their documents (``user_id, day, document``),
    ordered by day, joined by newlines; ``""`` for users without documents."""
    docs = documents if max_day is None else documents[documents["day"] <= max_day]
    joined = docs.sort_values(["user_id", "day"]).groupby("user_id")["document"].agg("\n".join)
    return [joined.get(int(u), "") for u in user_ids]


def tfidf_features(texts: Sequence[str], *, max_features: int = 20000, min_df: int = 2, ngram_max: int = 2,
                   sublinear_tf: bool = True) -> sparse.csr_matrix:
    """TF-IDF (scikit-learn, word unigrams..``ngram_max``-grams) of the users' raw text."""
    vectorizer = TfidfVectorizer(max_features=max_features, min_df=min_df, ngram_range=(1, ngram_max),
                                 sublinear_tf=sublinear_tf, dtype=np.float32)
    return vectorizer.fit_transform(list(texts)).tocsr()


def token_histories(
    rows_user: dict[str, np.ndarray],
    days: dict[str, np.ndarray],
    codes: dict[str, np.ndarray],
    *,
    n_users: int,
    sources: Sequence[str],
    max_day: int | None = None,
    max_steps: int = 64,
) -> UserTokenHistories:
    """Token histories of all users; steps (one per active source-day) ordered by (day, source
    order); a user with more than ``max_steps`` steps keeps the most recent ones. Users without
    any step get an all-padding row (``mask`` all False)."""
    parts = []
    for k, source in enumerate(sources):
        if source not in codes or not len(codes[source]):
            continue
        frame = pd.DataFrame({"user": rows_user[source], "day": days[source], "src": k, "row": np.arange(len(codes[source]))})
        parts.append(frame)
    if not parts:
        raise InputError("no token rows")
    steps = pd.concat(parts, ignore_index=True)
    if max_day is not None:
        steps = steps[steps["day"] <= max_day]
    steps = steps.sort_values(["user", "day", "src"], kind="stable")
    steps["rank_from_end"] = steps.groupby("user").cumcount(ascending=False)
    steps = steps[steps["rank_from_end"] < max_steps]
    steps["pos"] = steps.groupby("user").cumcount()
    width = max(1, int(steps["pos"].max()) + 1) if len(steps) else 1
    L = next(iter(c.shape[1] for s, c in codes.items() if s in sources and len(c)))
    out_codes = torch.zeros(n_users, width, L, dtype=torch.long)
    out_src = torch.zeros(n_users, width, dtype=torch.long)
    out_day = torch.zeros(n_users, width, dtype=torch.long)
    out_mask = torch.zeros(n_users, width, dtype=torch.bool)
    for k, source in enumerate(sources):
        sel = steps[steps["src"] == k]
        if not len(sel):
            continue
        u = torch.as_tensor(sel["user"].to_numpy(np.int64))
        p = torch.as_tensor(sel["pos"].to_numpy(np.int64))
        out_codes[u, p] = torch.as_tensor(np.asarray(codes[source])[sel["row"].to_numpy()], dtype=torch.long)
        out_src[u, p] = k
        out_day[u, p] = torch.as_tensor(sel["day"].to_numpy(np.int64))
        out_mask[u, p] = True
    return UserTokenHistories(out_codes, out_src, out_day, out_mask, list(sources))
