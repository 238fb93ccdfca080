"""Grouped data splits: no slide (or patient) ever contributes patches to both training and test.

Splits belong to the slides, not to a store (``Splits``): the fold of every group comes from the group names
and a seed alone, and so do the orders in which label budgets draw training groups, so two stores of the same
slides (another patch size, border policy or detector) get the same folds and budgets and their results pair.
A split is saved as ``splits.json`` and reused by every evaluation that names it. Budget draws are their own
axis: each draw is one seeded order of a fold's training groups, and a budget keeps its first groups, so the
budgets of a draw are nested (the 10% slides are among the 25% slides). A draw may be asked to hold every class
in its first groups (``every_class``), as a pathologist labelling four images would pick ones that show every
class. Validation sets for early stopping are carved from training groups only.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ..errors import BioaugError, ConfigError
from ..provenance import write_json_atomic

DRAW_POLICIES = ("random", "every_class")
SPLITS_FORMAT = 1

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


def validation_split(labels: Sequence[int], groups: Sequence[object], train_indices: np.ndarray,
                     fraction: float, seed: int) -> Split:
    """Split ``train_indices`` into (fit, validation) by whole groups, about ``fraction`` of groups validating.

    At least one group validates and at least one trains; returns an empty validation set when the training
    side has a single group (train then for a fixed number of epochs).
    """
    labels, groups = _validated(labels, groups)
    if not 0 < fraction < 1:
        raise ConfigError("--validation-fraction", f"must be in (0, 1), got {fraction}")
    train_indices = np.asarray(train_indices, dtype=np.int64)
    n_groups = len(set(groups[train_indices]))
    if n_groups < 2:
        return train_indices, train_indices[:0]
    n_splits = int(np.clip(round(1 / fraction), 2, n_groups))
    fit, val = _group_kfold(labels[train_indices], groups[train_indices], n_splits, seed)[0]
    fit, val = train_indices[fit], train_indices[val]
    check_disjoint_groups(groups, fit, val, "validation split")
    return fit, val


def _draw_order(names: list[str], classes: dict[str, set[int]], seed: int, fold: int, draw: int,
                policy: str) -> list[str]:
    """Training groups of one fold in the order draw ``draw`` labels them (seeded by seed, fold and draw only).

    With ``every_class`` the groups that first bring a class not yet covered move to the front (in their drawn
    order), so the smallest budgets that can hold every class do.
    """
    order = [names[i] for i in np.random.default_rng([seed, fold, draw]).permutation(len(names))]
    if policy == "random":
        return order
    covered: set[int] = set()
    first = []
    for name in order:
        if classes.get(name, set()) - covered:
            first.append(name)
            covered |= classes[name]
    chosen = set(first)
    return first + [name for name in order if name not in chosen]


@dataclass
class Splits:
    """Which fold each group is tested in, and per fold and budget draw the order its training groups are labelled.

    Build one with ``make``, keep it with ``save`` and read it back with ``load``; ``fold_indices`` and
    ``budget_indices`` turn it into patch indices of any store of the same groups.
    """

    folds: int
    seed: int
    group_by: str
    draw_policy: str
    fold_of: dict[str, int]
    orders: dict[int, dict[int, list[str]]]
    """fold -> draw -> the fold's training groups in labelling order."""

    @classmethod
    def make(cls, groups: Sequence[object], labels: Sequence[int], *, folds: int, seed: int, group_by: str,
             draws: Sequence[int], draw_policy: str = "random") -> "Splits":
        """Folds from the sorted group names shuffled by ``seed`` (sizes differ by at most one) and the orders
        of ``draws``; ``labels`` are used only by the ``every_class`` policy (which classes each group shows)."""
        if draw_policy not in DRAW_POLICIES:
            raise ConfigError("--draw-policy", f"{draw_policy!r} is not one of {', '.join(DRAW_POLICIES)}")
        labels, groups = _validated(labels, groups)
        names = sorted({str(group) for group in groups})
        if not 2 <= folds <= len(names):
            raise ConfigError("--folds", f"need 2 <= folds <= number of slides/groups ({len(names)}), got {folds}")
        rank = np.random.default_rng(seed).permutation(len(names))
        fold_of = {name: int(position % folds) for name, position in zip(names, rank)}
        classes: dict[str, set[int]] = {}
        for group, label in zip(map(str, groups), labels):
            classes.setdefault(group, set()).add(int(label))
        splits = cls(folds, seed, group_by, draw_policy, fold_of, {})
        for fold in range(folds):
            training = splits.training_groups(fold)
            splits.orders[fold] = {int(draw): _draw_order(training, classes, seed, fold, int(draw), draw_policy)
                                   for draw in draws}
        return splits

    def training_groups(self, fold: int) -> list[str]:
        """The sorted groups outside test fold ``fold``."""
        return sorted(name for name, k in self.fold_of.items() if k != fold)

    def budget_groups(self, fold: int, draw: int, fraction: float) -> list[str]:
        """The first ``max(1, round(fraction * G))`` of the fold's ``G`` training groups in draw ``draw``'s order."""
        if not 0 < fraction <= 1:
            raise ConfigError("--budgets", f"a label budget is a fraction of training slides in (0, 1], got {fraction}")
        order = self.orders[fold][draw]
        return order[:max(1, round(fraction * len(order)))]

    def fold_indices(self, groups: Sequence[object], fold: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) patch indices of a store whose patches belong to ``groups``."""
        test = np.array([self.fold_of[str(group)] == fold for group in groups], dtype=bool)
        return np.flatnonzero(~test), np.flatnonzero(test)

    def budget_indices(self, groups: Sequence[object], fold: int, draw: int, fraction: float) -> np.ndarray:
        """Patch indices of the budget's groups."""
        chosen = set(self.budget_groups(fold, draw, fraction))
        return np.flatnonzero([str(group) in chosen for group in groups])

    def check(self, groups: Sequence[object], store: object, source: object, *, folds: int, draws: Sequence[int],
              group_by: str) -> None:
        """Raise a one-line ``ConfigError`` unless this split covers exactly the store's groups and the config's
        folds, draws and group column."""
        present = {str(group) for group in groups}
        missing, extra = sorted(present - set(self.fold_of)), sorted(set(self.fold_of) - present)
        if missing:
            raise ConfigError(source, f"{len(missing)} {group_by}(s) of {store} are not in the split (e.g. "
                                      f"{', '.join(missing[:3])}): make a new split for these slides")
        if extra:
            raise ConfigError(source, f"{len(extra)} {group_by}(s) of the split are not in {store} (e.g. "
                                      f"{', '.join(extra[:3])}): evaluate on a store of every split slide")
        if (folds, group_by) != (self.folds, self.group_by):
            raise ConfigError(source, f"the split has {self.folds} folds by {self.group_by}, the config asks for "
                                      f"{folds} by {group_by}")
        absent = sorted(set(map(int, draws)) - set(self.orders[0]))
        if absent:
            raise ConfigError(source, f"the split has budget draws {sorted(self.orders[0])}, not {absent[0]}")

    def to_dict(self) -> dict[str, Any]:
        return {"format": SPLITS_FORMAT, "folds": self.folds, "seed": self.seed, "group_by": self.group_by,
                "draw_policy": self.draw_policy, "fold_of": dict(sorted(self.fold_of.items())),
                "orders": {str(fold): {str(draw): order for draw, order in draws.items()}
                           for fold, draws in self.orders.items()}}

    def save(self, path: Path) -> None:
        """Write the split as JSON (atomically): the file other evaluations reuse with ``--splits``."""
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "Splits":
        """A split saved by ``save``; a missing, unreadable or malformed file is a one-line ``ConfigError``."""
        try:
            data = json.loads(Path(path).read_text())
            if data.get("format") != SPLITS_FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            return cls(int(data["folds"]), int(data["seed"]), str(data["group_by"]), str(data["draw_policy"]),
                       {str(k): int(v) for k, v in data["fold_of"].items()},
                       {int(fold): {int(draw): [str(name) for name in order] for draw, order in draws.items()}
                        for fold, draws in data["orders"].items()})
        except OSError as exc:
            raise ConfigError(path, f"cannot read the split ({exc.strerror})") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(path, f"not a bioaug split file ({type(exc).__name__}: {exc})") from None
