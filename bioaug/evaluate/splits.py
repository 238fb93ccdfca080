"""Grouped data splits: no slide (or patient) ever contributes patches to both training and test.

Folds are stratified by class where the data allow it (``StratifiedGroupKFold``); validation sets are carved
from training groups only; label budgets keep a fraction of the training groups, nested across fractions for
a seed (the 10% slides are among the 25% slides), so budget curves compare like with like.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ..errors import BioaugError, ConfigError

Split = tuple[np.ndarray, np.ndarray]


def check_disjoint_groups(groups: np.ndarray, first: np.ndarray, second: np.ndarray,
                          what: str = "split") -> None:
    """Raise when any group has patches in both index sets ``first`` and ``second``."""
    shared = sorted(set(np.asarray(groups)[first]) & set(np.asarray(groups)[second]), key=str)
    if shared:
        raise BioaugError(what, f"{len(shared)} group(s) on both sides, e.g. {', '.join(map(str, shared[:5]))}")


def _group_kfold(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[Split]:
    """Grouped k-fold, stratified by ``labels`` unless a class has fewer patches than folds."""
    counts = np.bincount(labels) if len(labels) else np.zeros(0, int)
    stratify = bool(len(counts)) and counts[counts > 0].min() >= n_splits
    if not stratify:
        warnings.warn(f"a class has fewer than {n_splits} patches: grouped folds without class stratification",
                      stacklevel=3)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    target = labels if stratify else np.zeros(len(labels), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        return [(train, test) for train, test in splitter.split(np.zeros(len(labels)), target, groups)]


def _validated(labels: Sequence[int], groups: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    labels, groups = np.asarray(labels, dtype=np.int64), np.asarray(groups, dtype=object)
    if len(labels) != len(groups):
        raise ConfigError("split", f"{len(labels)} labels for {len(groups)} group names")
    if len(labels) and labels.min() < 0:
        raise ConfigError("split", "unlabelled patches (label -1) cannot be split for evaluation")
    return labels, groups


def grouped_folds(labels: Sequence[int], groups: Sequence[object], n_folds: int, seed: int) -> list[Split]:
    """``n_folds`` (train indices, test indices) pairs; every group is in exactly one test fold.

    Parameters
    ----------
    labels
        Class index per patch (no -1).
    groups
        Slide, image or patient name per patch; a group never straddles training and test.
    n_folds
        At least 2 and at most the number of groups.
    seed
        Which grouping; the same seed gives the same folds.

    Raises
    ------
    ConfigError
        Too few groups for ``n_folds``, or mismatched inputs.
    """
    labels, groups = _validated(labels, groups)
    n_groups = len(set(groups))
    if not 2 <= n_folds <= n_groups:
        raise ConfigError("folds", f"need 2 <= folds <= number of slides/groups ({n_groups}), got {n_folds}")
    folds = _group_kfold(labels, groups, n_folds, seed)
    for train, test in folds:
        check_disjoint_groups(groups, train, test, "fold")
    return folds


def validation_split(labels: Sequence[int], groups: Sequence[object], train_indices: np.ndarray,
                     fraction: float, seed: int) -> Split:
    """Split ``train_indices`` into (fit, validation) by whole groups, about ``fraction`` of groups validating.

    At least one group validates and at least one trains; returns an empty validation set when the training
    side has a single group (train then for a fixed number of epochs).
    """
    labels, groups = _validated(labels, groups)
    if not 0 < fraction < 1:
        raise ConfigError("validation fraction", f"must be in (0, 1), got {fraction}")
    train_indices = np.asarray(train_indices, dtype=np.int64)
    n_groups = len(set(groups[train_indices]))
    if n_groups < 2:
        return train_indices, train_indices[:0]
    n_splits = int(np.clip(round(1 / fraction), 2, n_groups))
    fit, val = _group_kfold(labels[train_indices], groups[train_indices], n_splits, seed)[0]
    fit, val = train_indices[fit], train_indices[val]
    check_disjoint_groups(groups, fit, val, "validation split")
    return fit, val


def label_budget(train_groups: Sequence[object], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over ``train_groups`` keeping the patches of ``max(1, round(fraction * G))`` groups.

    Groups are drawn in one seeded order and the first ones kept, so for a seed a smaller budget's groups
    are a subset of a larger budget's.

    Examples
    --------
    >>> mask = label_budget(["a", "a", "b", "c", "d"], 0.5, seed=0)
    >>> int(mask.sum()) in (2, 3)
    True
    """
    if not 0 < fraction <= 1:
        raise ConfigError("budget", f"a label budget is a fraction of training slides in (0, 1], got {fraction}")
    train_groups = np.asarray(train_groups, dtype=object)
    names = np.array(sorted(set(train_groups), key=str), dtype=object)
    if not len(names):
        raise ConfigError("budget", "no training groups to draw a budget from")
    keep = max(1, round(fraction * len(names)))
    chosen = names[np.random.default_rng(seed).permutation(len(names))[:keep]]
    return np.isin(train_groups, chosen)
