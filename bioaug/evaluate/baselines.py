"""The colour-statistics-only baseline: how far colour alone gets, without any morphology.

If a scikit-learn model on per-patch colour statistics scores close to the deep classifier, the task (or the
split) lets networks learn stain and scanner shortcuts, and gains from synthetic data may be colour effects.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import ConfigError

PERCENTILES = (5, 25, 50, 75, 95)
BASELINE_MODELS = ("logistic", "random_forest")


def colour_features(images: np.ndarray) -> np.ndarray:
    """Per-patch colour statistics (N, 42): mean, sd and percentiles of R, G, B and of H, E, D.

    HED channels come from ``skimage.color.rgb2hed`` (Ruifrok & Johnston colour deconvolution), so stain
    intensity is captured separately from the RGB appearance.
    """
    from skimage.color import rgb2hed

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got {images.shape}")
    rgb = images.astype(np.float64) / (255.0 if images.dtype == np.uint8 else 1.0)
    channels = np.concatenate([rgb, rgb2hed(rgb)], axis=-1).reshape(len(images), -1, 6)
    return np.concatenate([channels.mean(1), channels.std(1),
                           *np.percentile(channels, PERCENTILES, axis=1)], axis=1)


def _model(name: str, seed: int) -> ClassifierMixin:
    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    return RandomForestClassifier(n_estimators=200, class_weight="balanced", random_state=seed, n_jobs=1)


def colour_baseline(train_images: np.ndarray, train_labels: Sequence[int], test_images: np.ndarray,
                    n_classes: int, *, model: str = "logistic", seed: int = 0) -> np.ndarray:
    """Class probabilities (N_test, n_classes) from a class-balanced model on ``colour_features``.

    Classes absent from training get probability 0; a training set with a single class predicts it always.
    """
    if model not in BASELINE_MODELS:
        raise ConfigError("baseline", f"unknown colour baseline model {model!r}; valid: {', '.join(BASELINE_MODELS)}")
    labels = np.asarray(train_labels, dtype=np.int64)
    probabilities = np.zeros((len(test_images), n_classes))
    present = np.unique(labels)
    if len(present) == 1:
        probabilities[:, present[0]] = 1.0
        return probabilities
    classifier = _model(model, seed).fit(colour_features(train_images), labels)
    probabilities[:, present] = classifier.predict_proba(colour_features(test_images))
    return probabilities
