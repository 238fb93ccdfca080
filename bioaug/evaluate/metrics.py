"""Classification metrics from true labels and predicted probabilities, computed as scikit-learn does.

Small test folds often miss a class; every metric here stays defined then (per-class values become NaN,
macro ROC AUC averages the classes that can be scored) instead of raising halfway through a benchmark.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score

from ..registry import Registry


def _inputs(y_true: Sequence[int], y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_prob = np.asarray(y_true, dtype=np.int64), np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2 or len(y_prob) != len(y_true):
        raise ValueError(f"expected (N, n_classes) probabilities for {len(y_true)} labels, got {y_prob.shape}")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= y_prob.shape[1]):
        raise ValueError(f"labels must lie in [0, {y_prob.shape[1]}), got {y_true.min()}..{y_true.max()}")
    return y_true, y_prob


@contextmanager
def _missing_classes_allowed() -> Iterator[None]:
    """Silence scikit-learn's warning for predicted classes absent from a small test fold (expected here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        yield


def roc_auc_ovr(y_true: Sequence[int], y_prob: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC over the classes that have both positives and negatives in ``y_true``.

    Equals ``roc_auc_score(y_true, y_prob, multi_class="ovr", average="macro")`` when every class occurs
    (and ``roc_auc_score(y_true, y_prob[:, 1])`` for two classes); NaN when no class can be scored.
    """
    y_true, y_prob = _inputs(y_true, y_prob)
    scores = [roc_auc_score(y_true == k, y_prob[:, k]) for k in range(y_prob.shape[1])
              if 0 < (y_true == k).sum() < len(y_true)]
    if y_prob.shape[1] == 2:
        scores = scores[1:]  # binary AUC is symmetric; count it once
    return float(np.mean(scores)) if scores else float("nan")


@dataclass(frozen=True)
class Metric:
    """A number the report gives per run: how to compute it from (y_true, y_prob), and its name in tables."""

    label: str
    compute: Callable[[np.ndarray, np.ndarray], float]


SCALAR_METRICS: Registry[Metric] = Registry("metric", ValueError)
"""Metric name -> :class:`Metric`; the columns of every results table. Metric names come from code, not from
options, so an unknown one is a ``ValueError``."""

SCALAR_METRICS.register("accuracy", Metric("Accuracy", lambda y, p: float(accuracy_score(y, p.argmax(axis=1)))))
SCALAR_METRICS.register("balanced_accuracy", Metric(
    "Balanced acc.", lambda y, p: float(balanced_accuracy_score(y, p.argmax(axis=1)))))
SCALAR_METRICS.register("macro_f1", Metric(
    "Macro-F1", lambda y, p: float(f1_score(y, p.argmax(axis=1), average="macro", zero_division=0))))
SCALAR_METRICS.register("weighted_f1", Metric(
    "Weighted F1", lambda y, p: float(f1_score(y, p.argmax(axis=1), average="weighted", zero_division=0))))
SCALAR_METRICS.register("roc_auc", Metric("ROC AUC", roc_auc_ovr))


def metric_label(name: str) -> str:
    """The name of metric ``name`` in tables and figures (the key itself for a metric outside the registry)."""
    return SCALAR_METRICS[name].label if name in SCALAR_METRICS else name


def scalar_metric(name: str, y_true: Sequence[int], y_prob: np.ndarray) -> float:
    """One metric from ``SCALAR_METRICS`` by name."""
    metric = SCALAR_METRICS.require(name)
    with _missing_classes_allowed():
        return metric.compute(*_inputs(y_true, y_prob))


def per_class_rates(y_true: Sequence[int], y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sensitivity, specificity, confusion matrix) per class, from the argmax prediction.

    Sensitivity of a class absent from ``y_true`` is NaN, as is specificity when every sample is that class.
    The confusion matrix has true classes in rows, predicted in columns, over all ``n_classes``.
    """
    y_true, y_prob = _inputs(y_true, y_prob)
    n_classes = y_prob.shape[1]
    matrix = confusion_matrix(y_true, y_prob.argmax(axis=1), labels=np.arange(n_classes))
    true_positive = np.diag(matrix).astype(np.float64)
    positives = matrix.sum(axis=1).astype(np.float64)
    negatives = len(y_true) - positives
    true_negative = negatives - (matrix.sum(axis=0) - true_positive)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(positives > 0, true_positive / positives, np.nan)
        specificity = np.where(negatives > 0, true_negative / negatives, np.nan)
    return sensitivity, specificity, matrix


def classification_metrics(y_true: Sequence[int], y_prob: np.ndarray,
                           class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every metric of the report for one test set, JSON-ready.

    Returns the ``SCALAR_METRICS`` as floats, plus ``sensitivity``, ``specificity`` and ``per_class_f1`` as
    ``{class name: value}`` and ``confusion_matrix`` as nested lists (rows true, columns predicted).
    """
    y_true, y_prob = _inputs(y_true, y_prob)
    names = list(class_names) if class_names is not None else [str(k) for k in range(y_prob.shape[1])]
    if len(names) != y_prob.shape[1]:
        raise ValueError(f"{len(names)} class names for {y_prob.shape[1]} probability columns")
    with _missing_classes_allowed():
        result: dict[str, Any] = {name: metric.compute(y_true, y_prob) for name, metric in SCALAR_METRICS.items()}
    sensitivity, specificity, matrix = per_class_rates(y_true, y_prob)
    result["sensitivity"] = dict(zip(names, map(float, sensitivity)))
    result["specificity"] = dict(zip(names, map(float, specificity)))
    predicted = matrix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # F1 = 2 TP / (actual + predicted); NaN if class absent
        f1 = np.where(matrix.sum(axis=1) > 0, 2 * np.diag(matrix) / (matrix.sum(axis=1) + predicted), np.nan)
    result["per_class_f1"] = dict(zip(names, map(float, f1)))
    result["confusion_matrix"] = matrix.tolist()
    return result


def group_confusion(y_true: Sequence[int], y_prob: np.ndarray, groups: Sequence[str]) -> dict[str, list]:
    """Confusion matrix (true rows, predicted columns) of each test group (image or slide), JSON-ready.

    Summed with bootstrap weights over groups, these give any resample's confusion matrix without
    recomputing predictions: the basis of the image-level confidence intervals.
    """
    y_true, y_prob = _inputs(y_true, y_prob)
    predicted, n_classes, groups = y_prob.argmax(axis=1), y_prob.shape[1], np.asarray(groups, dtype=str)
    result = {}
    for group in sorted(set(groups)):
        chosen = groups == group
        cells = np.bincount(y_true[chosen] * n_classes + predicted[chosen], minlength=n_classes * n_classes)
        result[str(group)] = cells.reshape(n_classes, n_classes).tolist()
    return result


CONFUSION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
"""Metrics that a confusion matrix determines (ROC AUC needs the probabilities)."""


def metric_from_confusion(name: str, matrices: np.ndarray, classes: Sequence[int] | None = None) -> np.ndarray:
    """``name`` for each of a stack of confusion matrices (..., K, K), as scikit-learn computes it.

    Macro-F1 averages over the classes that occur in truth or prediction (scikit-learn's label set),
    balanced accuracy over the classes that occur in truth; undefined values are NaN. With ``classes``
    (e.g. those an external test set holds) macro-F1 averages over those only, so a class the test set lacks
    counts as absent rather than as a zero.
    """
    matrices = np.asarray(matrices, dtype=np.float64)
    if classes is not None and name == "macro_f1":
        chosen = np.asarray(classes, dtype=np.int64)
        true_positive = np.diagonal(matrices, axis1=-2, axis2=-1)[..., chosen]
        support, predicted = matrices.sum(-1)[..., chosen], matrices.sum(-2)[..., chosen]
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(support + predicted > 0, 2 * true_positive / (support + predicted), 0.0)
        return f1.mean(-1)
    true_positive = np.diagonal(matrices, axis1=-2, axis2=-1)
    support, predicted = matrices.sum(-1), matrices.sum(-2)
    total = support.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "accuracy":
            return true_positive.sum(-1) / total
        if name == "balanced_accuracy":
            recall = np.where(support > 0, true_positive / support, np.nan)
            return np.nanmean(recall, axis=-1) if recall.size else recall
        f1 = np.where(support + predicted > 0, 2 * true_positive / (support + predicted), np.nan)
        if name == "macro_f1":
            return np.nanmean(f1, axis=-1)
        if name == "weighted_f1":
            return np.nansum(np.nan_to_num(f1) * support, axis=-1) / total
    raise ValueError(f"{name!r} is not one of {', '.join(CONFUSION_METRICS)}")
