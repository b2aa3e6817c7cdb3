"""Linear probes of user representations (FOUNDv2 section 5.1.4): AUC and KS.

Protocol (identical for every representation, so the numbers compare):

* users are split once per task into train/test by :func:`split_users` — a seeded
  ``StratifiedShuffleSplit`` on the label, so every representation sees the same users;
* features are standardised (``StandardScaler`` fitted on the train users only);
* an L2 ``LogisticRegression`` (lbfgs, ``class_weight=None``) is fitted on the train users, its
  ``C`` chosen from ``c_grid`` by stratified ``cv_folds``-fold cross-validation on the train
  users only (ROC AUC), then refitted on all train users;
* on the test users: AUC = :func:`sklearn.metrics.roc_auc_score`, KS =
  :func:`scipy.stats.ks_2samp` statistic between the scores of positive and negative users
  (the maximum gap between the two empirical score CDFs).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse
from scipy.stats import ks_2samp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, StratifiedShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from u2qt_core.errors import InputError

__all__ = ["ProbeResult", "ks_statistic", "split_users", "linear_probe"]

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
    labels = np.asarray(labels).astype(int)
    if features.shape[0] != labels.shape[0]:
        raise InputError(f"{features.shape[0]} feature rows for {labels.shape[0]} labels")
    train, test = split
    x_train, x_test = features[train], features[test]
    if sparse.issparse(x_train):
        x_train, x_test = x_train.toarray(), x_test.toarray()
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    grid = list(c_grid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if len(grid) > 1:
            search = GridSearchCV(
                model, {"logisticregression__C": grid}, scoring="roc_auc",
                cv=StratifiedKFold(cv_folds, shuffle=True, random_state=seed), n_jobs=1, refit=True,
            )
            search.fit(x_train, labels[train])
            best_c = float(search.best_params_["logisticregression__C"])
            fitted = search.best_estimator_
        else:
            best_c = float(grid[0])
            fitted = model.set_params(logisticregression__C=best_c).fit(x_train, labels[train])
    scores = fitted.decision_function(x_test)
    return ProbeResult(
        auc=float(roc_auc_score(labels[test], scores)),
        ks=ks_statistic(scores, labels[test]),
        c=best_c,
        n_train=int(len(train)),
        n_test=int(len(test)),
        positives_test=int(labels[test].sum()),
    )


def probe_tasks(
    features: np.ndarray | sparse.spmatrix,
    labels: dict[str, np.ndarray],
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    c_grid: list[float] = (0.01, 0.1, 1.0),
    cv_folds: int = 3,
    max_iter: int = 2000,
    seed: int = 0,
) -> dict:
    """:func:`linear_probe` for every task: ``{"tasks": {task: result dict}, "avg_auc", "avg_ks"}``."""
    results = {}
    for task, y in labels.items():
        results[task] = linear_probe(features, y, split=splits[task], c_grid=list(c_grid), cv_folds=cv_folds,
                                     max_iter=max_iter, seed=seed).as_dict()
    return {
        "tasks": results,
        "avg_auc": float(np.mean([r["auc"] for r in results.values()])),
        "avg_ks": float(np.mean([r["ks"] for r in results.values()])),
        "dim": int(features.shape[1]),
    }
