"""The downstream classifier: MONAI networks by name and a seeded, class-balanced training loop.

``bioaug evaluate`` trains one of these per (arm, fold, budget, seed) cell; the same trained network also
provides the feature space for generator fidelity metrics, so nothing is downloaded. Names load on first
use, so that configs (``ClassifierConfig``) can be read without importing torch.
"""
from __future__ import annotations

from ..lazy import lazy_getattr

_LAZY = {
    "RECIPES": "recipes", "build_augmentation": "recipes",
    "ClassifierConfig": "config",
    "NETWORKS": "networks", "build_network": "networks",
    "extract_features": "train", "load_classifier": "train", "predict_proba": "train",
    "save_classifier": "train", "state_dict_sha256": "train", "train_classifier": "train",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_getattr(__name__, {name: f"{__name__}.{module}" for name, module in _LAZY.items()})
