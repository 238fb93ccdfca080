"""Summaries over repeated runs: mean ± sd, percentile bootstrap confidence intervals and paired tests.

A benchmark cell is one (seed, fold, budget) run. Arms are compared on the same cells, so the paired
differences cancel the large between-draw variation of small label budgets.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

from .metrics import metric_from_confusion, scalar_metric


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and bootstrap confidence interval of ``n`` finite values."""

    mean: float
    sd: float
    ci_low: float
    ci_high: float
    n: int

    def format(self, digits: int = 3) -> str:
        """``"0.812 ± 0.031 [0.790, 0.835]"``; undefined parts print as ``–``."""
        def number(value: float) -> str:
            return "–" if not np.isfinite(value) else f"{value:.{digits}f}"
        return f"{number(self.mean)} ± {number(self.sd)} [{number(self.ci_low)}, {number(self.ci_high)}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap ``values`` (NaN draws left out)."""
    values = _finite(values)
    if not len(values):
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                 statistic: Callable[..., np.ndarray] = np.mean) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (called with ``axis=1``) over resampled ``values``.

    NaN values are dropped first; an empty input gives (nan, nan).
    """
    values = _finite(values)
    if not len(values):
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, len(values), size=(n_resamples, len(values)))
    return percentile_interval(statistic(values[draws], axis=1), confidence)


def bootstrap_metric_ci(metric: str, y_true: Sequence[int], y_prob: np.ndarray, *,
                        groups: Sequence[Hashable] | None = None, confidence: float = 0.95,
                        n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of one metric over resampled test samples of a single run.

    With ``groups`` (the image or slide of every test patch) whole groups are resampled, as nuclei of one
    image share stain, focus and tissue context and are not independent; otherwise single patches are.
    Resamples where the metric is undefined (e.g. ROC AUC with one class drawn) are left out.
    """
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(len(y_true))]
    else:
        codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
        members = [np.flatnonzero(codes == code) for code in range(codes.max() + 1)] if len(codes) else []
    estimates = []
    for _ in range(n_resamples if members else 0):
        draw = np.concatenate([members[k] for k in rng.integers(0, len(members), size=len(members))])
        estimates.append(scalar_metric(metric, y_true[draw], y_prob[draw]))
    return percentile_interval(np.asarray(estimates), confidence)


def summarize(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 2000,
              seed: int = 0) -> Summary:
    """Mean ± sd (ddof=1) with a bootstrap CI of the mean over runs; NaN values are left out of all of them."""
    finite = _finite(values)
    mean = float(finite.mean()) if len(finite) else float("nan")
    sd = float(finite.std(ddof=1)) if len(finite) > 1 else float("nan")
    low, high = bootstrap_ci(finite, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return Summary(mean, sd, low, high, int(len(finite)))


@dataclass(frozen=True)
class PairedTest:
    """An arm against a reference over matched cells: mean difference (arm − reference) and two tests."""

    n: int
    mean_difference: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    t_statistic: float
    t_p: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_test(arm: Mapping[Hashable, float], reference: Mapping[Hashable, float]) -> PairedTest:
    """Wilcoxon signed-rank and paired t-test of ``arm`` vs ``reference`` on the cells both have.

    Keys identify cells, e.g. ``(seed, fold, budget)``; cells missing from either side or NaN in either are
    left out and ``n`` counts the rest. Tests need two cells; with fewer, their results are NaN. When every
    difference is zero the arms are identical: p = 1.
    """
    cells = [key for key in arm if key in reference and np.isfinite(arm[key]) and np.isfinite(reference[key])]
    differences = np.array([arm[key] - reference[key] for key in cells], dtype=np.float64)
    nan = float("nan")
    if len(differences) < 2:
        mean = float(differences.mean()) if len(differences) else nan
        return PairedTest(len(differences), mean, nan, nan, nan, nan)
    if not differences.any():
        return PairedTest(len(differences), 0.0, 0.0, 1.0, 0.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # t-test of constant differences divides by zero sd
        wilcoxon = scipy_stats.wilcoxon(differences)
        t_test = scipy_stats.ttest_1samp(differences, 0.0)
    return PairedTest(len(differences), float(differences.mean()), float(wilcoxon.statistic),
                      float(wilcoxon.pvalue), float(t_test.statistic), float(t_test.pvalue))


def image_bootstrap(runs: Mapping[Hashable, Mapping[str, Any]], metric: str, *, n_resamples: int = 1000,
                    seed: int = 0) -> dict[Hashable, np.ndarray]:
    """Resampled values (n_resamples,) of ``metric`` for every run, resampling whole test images.

    ``runs`` maps a run key to a row with ``fold`` and ``group_confusion`` ({image: confusion matrix}); rows
    tested on another set than their fold's (an external store) name it as ``test_set``, and rows whose
    macro-F1 averages over some classes only list them as ``classes``. Each resample
    draws every test set's images with replacement, the same draw for every run tested on it, so
    arms stay paired; a run's resampled confusion matrix is the draw-weighted sum of its images' matrices.
    Nuclei of one image share stain, focus and tissue, which makes a patch-level bootstrap too narrow.
    """
    rng = np.random.default_rng(seed)
    by_fold: dict[Any, list[str]] = {}
    for row in runs.values():
        by_fold.setdefault(row.get("test_set", row["fold"]), sorted(row["group_confusion"]))
    weights = {fold: rng.multinomial(len(groups), np.full(len(groups), 1 / len(groups)), size=n_resamples)
               for fold, groups in by_fold.items()}
    values = {}
    for key, row in runs.items():
        test_set = row.get("test_set", row["fold"])
        groups = by_fold[test_set]
        matrices = np.asarray([row["group_confusion"][g] for g in groups], dtype=np.float64)
        resampled = np.einsum("bg,gkl->bkl", weights[test_set], matrices)
        values[key] = metric_from_confusion(metric, resampled, row.get("classes"))
    return values


def minimum_detectable_difference(differences: Sequence[float], *, alpha: float = 0.05,
                                  power: float = 0.8) -> float:
    """Smallest mean paired difference a two-sided paired t-test at ``alpha`` detects with ``power``.

    ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)`` from the observed paired differences: what this
    run could have seen, to read a non-significant result as "no effect larger than this" rather than as
    "no effect". NaN with fewer than two pairs.
    """
    differences = _finite(differences)
    n = len(differences)
    if n < 2:
        return float("nan")
    quantiles = scipy_stats.t.ppf(1 - alpha / 2, n - 1) + scipy_stats.t.ppf(power, n - 1)
    return float(quantiles * differences.std(ddof=1) / np.sqrt(n))
