"""bioaug.classify: the MONAI network registry and the seeded, class-balanced training loop (tiny, on CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bioaug.classify import (NETWORKS, ClassifierConfig, build_network, extract_features, predict_proba,
                             state_dict_sha256, train_classifier)
from bioaug.classify.train import class_weights, classic_augmentation
from bioaug.config import build_config
from bioaug.errors import ConfigError
from bioaug.evaluate import classification_metrics


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_registered_network_gives_logits_on_32px(name):
    torch.manual_seed(0)
    model = build_network(name, 4).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 4)


def test_unknown_network_and_bad_options_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="unknown network 'vgg'; valid: densenet121, .*resnet18") as error:
        build_network("vgg", 3)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="'network': 'vgg' is not one of"):
        build_config(ClassifierConfig, {"network": "vgg"})
    with pytest.raises(ConfigError, match="augmentation"):
        build_config(ClassifierConfig, {"augmentation": "mixup"})
    with pytest.raises(ConfigError, match="epochs"):
        build_config(ClassifierConfig, {"epochs": 0})


def test_class_weights_balance_the_classes():
    weights = class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    assert weights[3] == 0  # absent class
    counts = np.array([3, 1, 2])
    assert np.allclose(weights[:3] * counts, weights[0] * counts[0])  # each present class weighs the same


def test_classic_augmentation_keeps_shape_and_dtype():
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    out = classic_augmentation(seed=0)(image=image)["image"]
    assert out.shape == image.shape and out.dtype == np.uint8


def _split(store):
    train = np.isin(store.slides, ["slide0", "slide1", "slide2"])
    return store.images(), store.labels, train


def test_train_classifier_learns_the_disc_store_and_is_deterministic(disc_store):
    images, labels, train = _split(disc_store)
    config = ClassifierConfig(network="resnet18", epochs=3, batch_size=16, lr=1e-3, seed=0)  # fixed epochs
    runs = [train_classifier(images[train], labels[train], images[~train], labels[~train], 3, config)
            for _ in range(2)]
    (model, history), (again, _) = runs
    assert state_dict_sha256(model) == state_dict_sha256(again)
    probabilities = predict_proba(model, images[~train])
    assert probabilities.shape == (int((~train).sum()), 3)
    assert np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert classification_metrics(labels[~train], probabilities)["balanced_accuracy"] > 0.8
    assert history["best_epoch"] == len(history["epochs"]) == 3 and not history["stopped_early"]
    assert all("val_balanced_accuracy" in record for record in history["epochs"])
    assert extract_features(model, images[:5]).shape == (5, 512)


def test_early_stopping_keeps_the_best_validation_epoch(disc_store):
    images, labels, train = _split(disc_store)
    fit, val = train & (disc_store.slides != "slide2"), disc_store.slides == "slide2"
    config = ClassifierConfig(network="resnet18", epochs=4, batch_size=16, seed=0, patience=1)
    model, history = train_classifier(images[fit], labels[fit], images[val], labels[val], 3, config)
    scores = [record["val_balanced_accuracy"] for record in history["epochs"]]
    assert scores[history["best_epoch"] - 1] == max(scores)
    if history["stopped_early"]:
        assert len(scores) == history["best_epoch"] + config.patience
    kept = classification_metrics(labels[val], predict_proba(model, images[val]))["balanced_accuracy"]
    assert kept == pytest.approx(max(scores))


def test_train_classifier_mixes_extra_patches_and_augments(disc_store):
    images, labels, train = _split(disc_store)
    config = ClassifierConfig(network="resnet18", epochs=1, batch_size=16, seed=1, augmentation="classic")
    model, history = train_classifier(images[train], labels[train], None, None, 3, config,
                                      extra=(images[~train], labels[~train]))
    assert history["n_train"] == len(images)
    assert history["best_epoch"] == 1 and "val_balanced_accuracy" not in history["epochs"][0]
    with pytest.raises(ConfigError, match="unlabelled"):
        train_classifier(images, np.full(len(images), -1), None, None, 3, config)
