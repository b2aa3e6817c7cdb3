"""Linear probes of user representations (FOUNDv2 section 5.1.4): AUC and KS.

Protocol (identical for every representation, so the numbers compare):

* users are split once per task into train/test by :func:`split_users` — a seeded
  ``StratifiedShuffleSplit`` on the label, so every representation sees the same users;
* features are standardised (``StandardScaler`` fitted on the train users only);
* an L2 logistic regression (lbfgs) is fitted on the train users, its ``C`` chosen from ``c_grid``
  by stratified ``cv_folds``-fold cross-validation on the train users only (ROC AUC,
  ``LogisticRegressionCV``), then refitted on all train users;
* on the test users: AUC = :func:`sklearn.metrics.roc_auc_score`, KS =
  :func:`scipy.stats.ks_2samp` statistic between the scores of positive and negative users
  (the maximum gap between the two empirical score CDFs).

Confidence intervals (``bootstrap`` > 0): the test users of a task are resampled with
replacement ``bootstrap`` times (seeded per task, so every representation sees the same
resamples: the intervals are paired) and the AUC recomputed on the fixed scores; the 95 %
interval is the 2.5-97.5 percentile range. The average AUC's interval averages the tasks'
resampled AUCs draw by draw. It covers the test-set sampling, not the probe's training.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse
from scipy.stats import ks_2samp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from sklearn.preprocessing import StandardScaler

from u2qt_core.errors import InputError

__all__ = ["ProbeResult", "ks_statistic", "split_users", "linear_probe", "probe_tasks", "bootstrap_aucs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    auc: float
    ks: float
    c: float
    n_train: int
    n_test: int
    positives_test: int

    def as_dict(self) -> dict:
        return asdict(self)


def ks_statistic(scores: np.ndarray, labels: np.ndarray) -> float:
    """KS statistic between the scores of positives and negatives (``scipy.stats.ks_2samp``)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise InputError("KS needs both positive and negative examples")
    return float(ks_2samp(scores[labels], scores[~labels]).statistic)


def split_users(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test split: ``(train_index, test_index)`` into ``labels``."""
    labels = np.asarray(labels)
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(labels)), labels))
    return np.sort(train), np.sort(test)


def bootstrap_aucs(labels: np.ndarray, scores: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """AUC of ``scores`` [n] against ``labels`` [n] on ``draws`` resamples of the n rows with
    replacement -> float [draws] (a resample holding one class only is drawn again)."""
    rng = np.random.default_rng(seed)
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    out = np.empty(draws)
    for i in range(draws):
        while True:
            pick = rng.integers(0, len(labels), len(labels))
            if 0 < labels[pick].sum() < len(pick):
                break
        out[i] = roc_auc_score(labels[pick], scores[pick])
    return out


def _interval(draws: np.ndarray) -> list[float]:
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def linear_probe(
    features: np.ndarray | sparse.spmatrix,
    labels: np.ndarray,
    *,
    split: tuple[np.ndarray, np.ndarray],
    c_grid: list[float] = (0.01, 0.1, 1.0),
    cv_folds: int = 3,
    max_iter: int = 2000,
    seed: int = 0,
) -> ProbeResult:
    """Fit the probe on ``split[0]`` users, report AUC/KS on ``split[1]`` (see module docstring)."""
    return _fit_and_score(features, labels, split=split, c_grid=c_grid, cv_folds=cv_folds, max_iter=max_iter,
                          seed=seed)[0]


def _fit_and_score(
    features: np.ndarray | sparse.spmatrix,
    labels: np.ndarray,
    *,
    split: tuple[np.ndarray, np.ndarray],
    c_grid: list[float],
    cv_folds: int,
    max_iter: int,
    seed: int,
) -> tuple[ProbeResult, np.ndarray]:
    """:func:`linear_probe`'s result and the test users' scores float [n_test]."""
    labels = np.asarray(labels).astype(int)
    if features.shape[0] != labels.shape[0]:
        raise InputError(f"{features.shape[0]} feature rows for {labels.shape[0]} labels")
    train, test = split
    x_train, x_test = features[train], features[test]
    if sparse.issparse(x_train):
        x_train, x_test = x_train.toarray(), x_test.toarray()
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    grid = sorted(float(c) for c in c_grid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if len(grid) > 1:
            # warm-started regularisation path per fold, C picked by mean CV ROC AUC, refit on all train users
            fitted = LogisticRegressionCV(
                Cs=grid, cv=StratifiedKFold(cv_folds, shuffle=True, random_state=seed), scoring="roc_auc",
                max_iter=max_iter, n_jobs=1, refit=True, l1_ratios=(0.0,), use_legacy_attributes=False,
            ).fit(x_train, labels[train])
            best_c = float(np.atleast_1d(fitted.C_)[0])
        else:
            best_c = grid[0]
            fitted = LogisticRegression(C=best_c, max_iter=max_iter).fit(x_train, labels[train])
    scores = fitted.decision_function(x_test)
    return ProbeResult(
        auc=float(roc_auc_score(labels[test], scores)),
        ks=ks_statistic(scores, labels[test]),
        c=best_c,
        n_train=int(len(train)),
        n_test=int(len(test)),
        positives_test=int(labels[test].sum()),
    ), scores


def probe_tasks(
    features: np.ndarray | sparse.spmatrix,
    labels: dict[str, np.ndarray],
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    c_grid: list[float] = (0.01, 0.1, 1.0),
    cv_folds: int = 3,
    max_iter: int = 2000,
    seed: int = 0,
    c_by_task: dict[str, float] | None = None,
    bootstrap: int = 0,
) -> dict:
    """:func:`linear_probe` for every task: ``{"tasks": {task: result dict}, "avg_auc", "avg_ks", "dim"}``.
    ``c_by_task`` fixes C per task (no inner CV), e.g. the C picked for a reference representation.
    ``bootstrap`` > 0 adds 95 % intervals ``auc_ci`` per task and ``avg_auc_ci``, and the average
    AUC of every resample, ``avg_auc_draws`` (the same resamples for every representation, so
    two representations' draws give an interval of their difference; module docstring)."""
    results, draws = {}, []
    for index, (task, y) in enumerate(labels.items()):
        grid = [c_by_task[task]] if c_by_task else list(c_grid)
        result, scores = _fit_and_score(features, y, split=splits[task], c_grid=grid, cv_folds=cv_folds,
                                        max_iter=max_iter, seed=seed)
        results[task] = result.as_dict()
        if bootstrap:
            draws.append(bootstrap_aucs(np.asarray(y)[splits[task][1]], scores, bootstrap, seed + 1000 * (index + 1)))
            results[task]["auc_ci"] = _interval(draws[-1])
    out = {
        "tasks": results,
        "avg_auc": float(np.mean([r["auc"] for r in results.values()])),
        "avg_ks": float(np.mean([r["ks"] for r in results.values()])),
        "dim": int(features.shape[1]),
    }
    if bootstrap:
        average = np.mean(draws, axis=0)
        out["avg_auc_ci"] = _interval(average)
        out["avg_auc_draws"] = [round(float(v), 6) for v in average]   # paired: for CIs of differences
    return out
