"""Honest measurement of whether synthetic patches help: grouped splits, metrics, statistics, report.

The building blocks of ``bioaug evaluate``; none imports torch, so they also serve the colour baseline and
the report on their own. The classifier itself lives in ``bioaug.classify``.
"""
from __future__ import annotations

from .baselines import colour_baseline, colour_features
from .fidelity import fidelity_metrics, frechet_distance, kernel_distance, precision_recall, two_sample_accuracy
from .leakage import check_generator_leakage, check_generator_store, generator_training_slides
from .metrics import SCALAR_METRICS, classification_metrics, per_class_rates, roc_auc_ovr, scalar_metric
from .report import summarize_results, write_report
from .splits import check_disjoint_groups, grouped_folds, label_budget, validation_split
from .stats import PairedTest, Summary, bootstrap_ci, bootstrap_metric_ci, paired_test, summarize

__all__ = ["SCALAR_METRICS", "PairedTest", "Summary", "bootstrap_ci", "bootstrap_metric_ci",
           "check_disjoint_groups", "check_generator_leakage", "check_generator_store", "classification_metrics",
           "colour_baseline", "colour_features", "fidelity_metrics", "frechet_distance",
           "generator_training_slides", "grouped_folds", "kernel_distance", "label_budget", "paired_test",
           "per_class_rates", "precision_recall", "roc_auc_ovr", "scalar_metric", "summarize",
           "summarize_results", "two_sample_accuracy", "validation_split", "write_report"]
