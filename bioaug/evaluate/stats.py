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

from .metrics import scalar_metric


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


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                 statistic: Callable[..., np.ndarray] = np.mean) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (called with ``axis=1``) over resampled ``values``.

    NaN values are dropped first; an empty input gives (nan, nan).
    """
    values = _finite(values)
    if not len(values):
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, len(values), size=(n_resamples, len(values)))
    estimates = statistic(values[draws], axis=1)
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(estimates, tail)), float(np.percentile(estimates, 100 - tail))


def bootstrap_metric_ci(metric: str, y_true: Sequence[int], y_prob: np.ndarray, *, confidence: float = 0.95,
                        n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of one metric over resampled test samples (patches) of a single run.

    Resamples where the metric is undefined (e.g. ROC AUC with one class drawn) are left out.
    """
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(n_resamples):
        draw = rng.integers(0, len(y_true), size=len(y_true))
        estimates.append(scalar_metric(metric, y_true[draw], y_prob[draw]))
    estimates = _finite(estimates)
    if not len(estimates):
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(estimates, tail)), float(np.percentile(estimates, 100 - tail))


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
