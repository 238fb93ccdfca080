"""Generator quality from feature vectors, with no downloaded network.

The features come from a classifier trained here on the real training patches
(``bioaug.classify.extract_features``; record its ``state_dict_sha256`` beside the numbers). Scores are
comparable between generators only within one feature network.

References
----------
Heusel et al. 2017 (Fréchet distance); Bińkowski et al. 2018 (KID); Kynkäänniemi et al. 2019 (improved
precision and recall); Lopez-Paz & Oquab 2017 (classifier two-sample tests).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import linalg
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def _features(real: np.ndarray, fake: np.ndarray, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected (N, D) features of equal D, got {real.shape} and {fake.shape}")
    if min(len(real), len(fake)) < minimum:
        raise ValueError(f"need at least {minimum} real and synthetic samples, got {len(real)} and {len(fake)}")
    return real, fake


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula, any features).

    ``|mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2))``; imaginary parts from numerical error are dropped.
    """
    real, fake = _features(real, fake)
    mean_difference = real.mean(0) - fake.mean(0)
    cov_real, cov_fake = np.atleast_2d(np.cov(real, rowvar=False)), np.atleast_2d(np.cov(fake, rowvar=False))
    root = linalg.sqrtm(cov_real @ cov_fake)
    if not np.isfinite(root).all():  # singular product: regularise as in the reference implementation
        offset = np.eye(len(cov_real)) * 1e-6
        root = linalg.sqrtm((cov_real + offset) @ (cov_fake + offset))
    distance = mean_difference @ mean_difference + np.trace(cov_real) + np.trace(cov_fake) - 2 * np.trace(root.real)
    return float(max(distance, 0.0))


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel ``(x·y / D + 1)^3``."""
    dims = x.shape[1]
    k_xx, k_yy, k_xy = ((a @ b.T / dims + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


def kernel_distance(real: np.ndarray, fake: np.ndarray, *, subsets: int = 10, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID: mean and sd of the unbiased polynomial-kernel MMD² over random subsets of both feature sets.

    Unbiased, so it can be slightly negative for identical distributions; subsets are
    ``min(subset_size, len(real), len(fake))`` samples without replacement.
    """
    real, fake = _features(real, fake)
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    values = [_unbiased_mmd2(real[rng.choice(len(real), size, replace=False)],
                             fake[rng.choice(len(fake), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def _radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each sample to its k-th nearest neighbour in the same set (itself excluded)."""
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return distances[:, -1]


def _coverage(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray) -> float:
    """Fraction of ``queries`` inside at least one ball (centre in ``manifold``, k-NN radius)."""
    distances = np.sqrt(np.maximum(
        (queries ** 2).sum(1)[:, None] + (manifold ** 2).sum(1)[None, :] - 2 * queries @ manifold.T, 0.0))
    return float((distances <= radii[None, :]).any(axis=1).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> tuple[float, float]:
    """k-NN precision (synthetic samples on the real manifold) and recall (real samples on the synthetic one).

    Each manifold is the union of balls around its samples with radius the distance to the k-th nearest
    neighbour (Kynkäänniemi et al. 2019). Low precision: unrealistic samples; low recall: missing modes.
    """
    real, fake = _features(real, fake, minimum=k + 1)
    return _coverage(real, _radii(real, k), fake), _coverage(fake, _radii(fake, k), real)


def two_sample_accuracy(real: np.ndarray, fake: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """Classifier two-sample test: cross-validated balanced accuracy of logistic regression real vs synthetic.

    0.5 means the two sets cannot be told apart (ideal); 1.0 means every synthetic sample is recognisable.
    Balanced accuracy keeps 0.5 the chance level when the sets differ in size.
    """
    real, fake = _features(real, fake, minimum=folds)
    features = np.concatenate([real, fake])
    labels = np.concatenate([np.zeros(len(real), int), np.ones(len(fake), int)])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, features, labels, cv=splitter, scoring="balanced_accuracy").mean())


def fidelity_metrics(real: np.ndarray, fake: np.ndarray, *, k: int = 3, seed: int = 0) -> dict[str, Any]:
    """All generator-quality numbers for one pair of feature sets, JSON-ready."""
    kid_mean, kid_sd = kernel_distance(real, fake, seed=seed)
    precision, recall = precision_recall(real, fake, k=k)
    return {"frechet_distance": frechet_distance(real, fake), "kid": kid_mean, "kid_sd": kid_sd,
            "precision": precision, "recall": recall, "two_sample_accuracy": two_sample_accuracy(real, fake, seed=seed),
            "n_real": int(len(real)), "n_synthetic": int(len(fake)), "k": k}
