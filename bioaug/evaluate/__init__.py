"""Honest measurement of whether synthetic patches help: grouped splits, metrics, statistics, report.

The building blocks of ``bioaug evaluate`` and the protocol that runs them (``run_evaluation``). Names are
loaded on first use, so that the command line can build ``--help`` from ``EvaluateConfig`` without importing
scikit-learn or torch; only the protocol itself imports torch (through ``bioaug.classify``).
"""
from __future__ import annotations

from ..lazy import lazy_getattr

_LAZY = {
    "colour_baseline": "baselines", "colour_features": "baselines",
    "ARMS": "config", "EvaluateConfig": "config",
    "fidelity_metrics": "fidelity", "frechet_distance": "fidelity", "kernel_distance": "fidelity",
    "precision_recall": "fidelity", "two_sample_accuracy": "fidelity",
    "check_generator_leakage": "leakage", "check_generator_store": "leakage",
    "generator_training_slides": "leakage",
    "SCALAR_METRICS": "metrics", "classification_metrics": "metrics", "per_class_rates": "metrics",
    "roc_auc_ovr": "metrics", "scalar_metric": "metrics",
    "run_evaluation": "protocol",
    "summarize_results": "report", "write_report": "report",
    "Splits": "splits", "check_disjoint_groups": "splits", "validation_split": "splits",
    "PairedTest": "stats", "Summary": "stats", "bootstrap_ci": "stats", "bootstrap_metric_ci": "stats",
    "paired_test": "stats", "summarize": "stats",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_getattr(__name__, {name: f"{__name__}.{module}" for name, module in _LAZY.items()})
