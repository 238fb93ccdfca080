"""The downstream classifier: MONAI networks by name and a seeded, class-balanced training loop.

``bioaug evaluate`` trains one of these per (arm, fold, budget, seed) cell; the same trained network also
provides the feature space for generator fidelity metrics, so nothing is downloaded.
"""
from __future__ import annotations

from .networks import NETWORKS, build_network
from .train import (ClassifierConfig, extract_features, predict_proba, state_dict_sha256,
                    train_classifier)

__all__ = ["NETWORKS", "ClassifierConfig", "build_network", "extract_features", "predict_proba",
           "state_dict_sha256", "train_classifier"]
