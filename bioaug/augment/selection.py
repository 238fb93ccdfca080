"""Selective augmentation (as in HistoGAN): keep synthetic patches that look like their class.

A classifier trained on the real training patches scores every sample. A sample is kept when the classifier
gives its intended class at least ``min_confidence`` and its features lie within that class's real features:
its mean distance to the ``NEIGHBOURS`` nearest real patches of the class is no larger than the
``feature_quantile`` quantile of the same distance for the real patches themselves (leave-one-out). The first
test rejects samples that show another class; the second rejects confident but atypical ones.

The scorer is injectable: any callable mapping (N, H, W, 3) uint8 patches to (probabilities (N, K),
features (N, D)) works, so tests and other feature networks need no training here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from ..classify import (ClassifierConfig, extract_features, load_classifier, predict_proba, save_classifier,
                        state_dict_sha256, train_classifier)
from ..config import config_to_dict
from ..progress import progress_bar
from ..provenance import sha256_json, write_json_atomic
from ..store import PatchStore, check_compatible, subset_store
from .config import AugmentConfig
from .records import class_tally, write_csv_atomic

Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
NEIGHBOURS = 3
REASONS = ("kept", "misclassified", "low_confidence", "off_distribution")
SELECTION_COLUMNS = ("latent_index", "label", "confidence", "feature_distance", "kept", "reason")


def classifier_config(config: AugmentConfig) -> ClassifierConfig:
    """The selection/audit classifier's training config (validated, so a bad network name fails early)."""
    chosen = ClassifierConfig(network=config.classifier, steps=config.classifier_steps, seed=config.seed)
    chosen.validate()
    return chosen


def train_scorer(real: PatchStore, config: AugmentConfig, device: torch.device | str | None = None, *,
                 cache: Path | None = None) -> tuple[Scorer, dict[str, Any]]:
    """Train ``config.classifier`` on ``real``'s labelled patches; return it as a scorer and what it was.

    With ``cache`` (a directory), the trained weights are kept there under a key of the real store's content
    hash and the classifier config, and a later call with the same key loads them instead of retraining
    (training is deterministic on CPU, so the loaded network is the one that would be trained). The info
    dict (network, steps, patches, weights sha256, whether it came from the cache) goes into the reports.
    """
    chosen = classifier_config(config)
    labelled = np.flatnonzero(real.labels >= 0)
    key = sha256_json({"real": real.content_hash, "classifier": config_to_dict(chosen)})
    path = cache / f"{key[:24]}.pt" if cache is not None else None
    cached = path is not None and path.is_file()
    if cached:
        model = load_classifier(path, chosen, len(real.class_names))
    else:
        model, _ = train_classifier(real.images(labelled), real.labels[labelled], None, None,
                                    len(real.class_names), chosen, device=device)
        if path is not None:
            save_classifier(model, path)

    def scorer(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (predict_proba(model, images, batch_size=config.batch_size, device=device),
                extract_features(model, images, batch_size=config.batch_size, device=device))

    info = {"network": config.classifier, "steps": config.classifier_steps, "n_train": int(len(labelled)),
            "cached": bool(cached), "sha256": state_dict_sha256(model)}
    return scorer, info


def _mean_knn(reference: np.ndarray, queries: np.ndarray | None, k: int) -> np.ndarray:
    """Mean distance of each query to its ``k`` nearest rows of ``reference``; with ``queries`` None, of each
    reference row to its ``k`` nearest other rows (leave-one-out). scikit-learn's search works in bounded
    memory, unlike a dense distance matrix of a large class."""
    search = NearestNeighbors(n_neighbors=k if queries is not None else k + 1).fit(reference)
    distances, _ = search.kneighbors(queries if queries is not None else reference)
    return distances[:, -k:].mean(1)


@dataclass
class ClassReference:
    """Real features per class and the feature-distance threshold of each class (NaN: not judged)."""

    features: list[np.ndarray]
    thresholds: np.ndarray
    neighbours: list[int]

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, n_classes: int, quantile: float) -> "ClassReference":
        """Thresholds from the real patches' leave-one-out k-NN distances within their own class.

        A class with fewer than two real patches has no such distances; its samples skip the feature test.
        """
        members = [features[labels == index] for index in range(n_classes)]
        neighbours = [min(NEIGHBOURS, len(m) - 1) for m in members]
        thresholds = np.full(n_classes, np.nan)
        for index, (own, k) in enumerate(zip(members, neighbours)):
            if k >= 1:
                thresholds[index] = np.quantile(_mean_knn(own, None, k), quantile)
        return cls(members, thresholds, neighbours)

    def distances(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Mean distance of each sample to the k nearest real patches of its intended class (NaN: none)."""
        out = np.full(len(features), np.nan)
        for index in np.unique(labels):
            if self.neighbours[index] >= 1:
                chosen = labels == index
                out[chosen] = _mean_knn(self.features[index], features[chosen], self.neighbours[index])
        return out


def judge(probabilities: np.ndarray, features: np.ndarray, labels: np.ndarray, reference: ClassReference,
          min_confidence: float) -> dict[str, np.ndarray]:
    """Confidence, feature distance, kept flag and reason (one of ``REASONS``) of each sample.

    Reasons are checked in order: predicted another class, intended class below ``min_confidence``, features
    beyond the class threshold; the first that applies is recorded.
    """
    labels = np.asarray(labels, dtype=np.int64)
    confidence = probabilities[np.arange(len(labels)), labels]
    distance = reference.distances(features, labels)
    threshold = reference.thresholds[labels]
    reason = np.full(len(labels), "kept", dtype=object)
    reason[distance > threshold] = "off_distribution"  # NaN compares False: unjudged samples pass
    reason[confidence < min_confidence] = "low_confidence"
    reason[probabilities.argmax(1) != labels] = "misclassified"
    return {"confidence": confidence, "feature_distance": distance, "kept": reason == "kept", "reason": reason}


def fit_reference(real: PatchStore, scorer: Scorer, config: AugmentConfig) -> tuple[ClassReference, np.ndarray]:
    """Score every real patch once: the class reference (from the labelled ones) and the features of all, in
    store order (reused by the audit)."""
    features = np.concatenate([scorer(real.images(range(i, min(i + config.batch_size, len(real)))))[1]
                               for i in range(0, len(real), config.batch_size)])
    return ClassReference.fit(features, real.labels, len(real.class_names), config.feature_quantile), features


def selection_rows(latent_index: np.ndarray, labels: np.ndarray, verdict: dict[str, np.ndarray],
                   class_names: list[str]) -> list[dict[str, Any]]:
    """Rows of ``selection.csv``: one per generated sample."""
    return [{"latent_index": int(i), "label": class_names[label], "confidence": round(float(c), 6),
             "feature_distance": round(float(d), 6) if np.isfinite(d) else "", "kept": int(k), "reason": r}
            for i, label, c, d, k, r in zip(latent_index, labels, verdict["confidence"],
                                            verdict["feature_distance"], verdict["kept"], verdict["reason"])]


def select_synthetic(synthetic: PatchStore, real: PatchStore, out: str | Path, config: AugmentConfig, *,
                     scorer: Scorer | None = None, progress: bool = True) -> PatchStore:
    """Write the samples of ``synthetic`` that pass selection as a new store ``out``.

    ``real`` provides the classifier's training patches (unless ``scorer`` is given) and the class reference.
    Beside the new store's files go ``selection.csv`` (every sample: latent index, class, confidence, feature
    distance, kept, reason) and ``selection.json`` (per-class generated/kept counts and rejection reasons).
    Raises ``StoreError`` when the two stores' patch sizes, µm/px or classes differ.
    """
    check_compatible(synthetic, real)
    config.validate()
    classifier: dict[str, Any] = {"network": "injected scorer"}
    if scorer is None:
        scorer, classifier = train_scorer(real, config)
    reference, _ = fit_reference(real, scorer, config)
    labels = synthetic.labels
    verdicts: list[dict[str, np.ndarray]] = []
    for start in progress_bar(range(0, len(synthetic), config.batch_size), desc="select", unit="batch",
                              disable=not progress):
        chosen = np.arange(start, min(start + config.batch_size, len(synthetic)))
        probabilities, features = scorer(synthetic.images(chosen))
        verdicts.append(judge(probabilities, features, labels[chosen], reference, config.min_confidence))
    verdict = {key: np.concatenate([v[key] for v in verdicts]) if verdicts else np.zeros(0)
               for key in ("confidence", "feature_distance", "kept", "reason")}
    verdict["kept"] = verdict["kept"].astype(bool)
    tally = class_tally(synthetic.class_names, labels, verdict["reason"].astype(object))
    report = {"min_confidence": config.min_confidence, "feature_quantile": config.feature_quantile,
              "thresholds": dict(zip(real.class_names, map(_finite, reference.thresholds))),
              "classifier": classifier, "classes": tally}
    store = subset_store(synthetic, np.flatnonzero(verdict["kept"]), out,
                         provenance={**synthetic.header.provenance, "selection": report,
                                     "real_store_sha256": real.content_hash})
    latent = synthetic.manifest.get("latent_index", np.arange(len(synthetic)))
    write_csv_atomic(store.path / "selection.csv", SELECTION_COLUMNS,
                     selection_rows(latent, labels, verdict, synthetic.class_names))
    write_json_atomic(store.path / "selection.json", report)
    return store


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
