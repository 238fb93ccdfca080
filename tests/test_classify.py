"""bioaug.classify: the MONAI network registry and the seeded, class-balanced training loop (tiny, on CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bioaug.classify import (NETWORKS, ClassifierConfig, build_network, extract_features, predict_proba,
                             state_dict_sha256, train_classifier)
from bioaug.classify import RECIPES, build_augmentation
from bioaug.classify import train as train_module
from bioaug.classify.train import class_weights, lr_factor, mixture_class_weights
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
    with pytest.raises(ConfigError, match="^--network: 'vgg' is not one of"):
        build_config(ClassifierConfig, {"network": "vgg"})
    with pytest.raises(ConfigError, match="augmentation"):
        build_config(ClassifierConfig, {"augmentation": "mixup"})
    with pytest.raises(ConfigError, match="steps"):
        build_config(ClassifierConfig, {"steps": 0})
    with pytest.raises(ConfigError, match="unknown augmentation 'mixup'; valid: none, geometric"):
        build_augmentation("mixup", 0)


def test_class_weights_balance_the_classes():
    weights = class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    assert weights[3] == 0  # absent class
    counts = np.array([3, 1, 2])
    assert np.allclose(weights[:3] * counts, weights[0] * counts[0])  # each present class weighs the same


def test_mixture_weights_balance_the_batches_actually_drawn():
    real, extra = np.array([0, 0, 0, 1]), np.array([1, 1, 2, 2])
    weights = mixture_class_weights(real, extra, 0.5, 3)
    frequency = 0.5 * np.array([0.75, 0.25, 0]) + 0.5 * np.array([0, 0.5, 0.5])
    assert np.allclose(weights * frequency, 1 / 3)


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_keeps_shape_and_dtype(name):
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    transform = build_augmentation(name, seed=0)
    out = image if transform is None else transform(image=image)["image"]
    assert out.shape == image.shape and out.dtype == np.uint8


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [lr_factor(step, 100, 0.1) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] < 0.01


def _split(store):
    train = np.isin(store.slides, ["slide0", "slide1", "slide2"])
    return store.images(), store.labels, train


def test_train_classifier_learns_the_disc_store_and_is_deterministic(disc_store):
    images, labels, train = _split(disc_store)
    config = ClassifierConfig(network="resnet10-w0.5", steps=30, batch_size=16, seed=0)
    runs = [train_classifier(images[train], labels[train], None, None, 3, config, progress=False)
            for _ in range(2)]
    (model, history), (again, _) = runs
    assert state_dict_sha256(model) == state_dict_sha256(again)
    probabilities = predict_proba(model, images[~train])
    assert probabilities.shape == (int((~train).sum()), 3)
    assert np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert classification_metrics(labels[~train], probabilities)["balanced_accuracy"] > 0.8
    assert history["steps_run"] == 30 and history["best_step"] == 30 and not history["stopped_early"]
    assert history["batch"] == {"real": 16, "extra": 0}
    assert extract_features(model, images[:5]).shape == (5, 256)


@pytest.mark.parametrize("scores, best_step, steps_run, stopped_early", [
    ([0.4, 0.6, 0.5, 0.6, 0.9], 10, 20, True),  # no better score in 2 validations after step 10 (a tie is none)
    ([0.1, 0.2, 0.3, 0.2, 0.4, 0.35], 25, 30, False),  # the last validation is 1 short of the patience
])
def test_early_stopping_keeps_the_best_validation(disc_store, monkeypatch, scores, best_step, steps_run,
                                                  stopped_early):
    """Validation scores are scripted, so whether and when training stops is known; the weights kept must be
    those whose predictions were scored best."""
    images, labels, train = _split(disc_store)
    fit, val = train & (disc_store.slides != "slide2"), disc_store.slides == "slide2"
    validated = []  # the probabilities of every validation

    def recorded_predict_proba(*args, **kwargs):
        validated.append(predict_proba(*args, **kwargs))
        return validated[-1]

    monkeypatch.setattr(train_module, "predict_proba", recorded_predict_proba)
    monkeypatch.setattr(train_module, "balanced_accuracy_score", lambda y_true, y_pred: scores[len(validated) - 1])
    config = ClassifierConfig(network="resnet10-w0.5", steps=30, eval_every=5, batch_size=16, seed=0, patience=2)
    model, history = train_classifier(images[fit], labels[fit], images[val], labels[val], 3, config,
                                      progress=False)
    steps = [record["step"] for record in history["log"]]
    assert steps == list(range(5, steps_run + 1, 5))
    assert [record["val_balanced_accuracy"] for record in history["log"]] == scores[:len(steps)]
    assert (history["best_step"], history["steps_run"], history["stopped_early"]) == (best_step, steps_run,
                                                                                     stopped_early)
    kept = predict_proba(model, images[val], batch_size=config.batch_size)
    best = validated[steps.index(best_step)]
    assert not np.allclose(best, validated[-1])  # the weights of the last validation would be told apart
    assert np.allclose(kept, best, atol=1e-6)


@pytest.mark.parametrize("fraction, expected", [(0.0, (16, 0)), (0.25, (12, 4)), (0.5, (8, 8)), (1.0, (0, 16))])
def test_extra_patches_fill_their_share_of_every_batch_and_steps_stay_fixed(disc_store, fraction, expected,
                                                                           monkeypatch):
    images, labels, train = _split(disc_store)
    seen = []
    original = train_module._to_tensor

    def spy(batch, device):
        seen.append(len(batch))
        return original(batch, device)

    monkeypatch.setattr(train_module, "_to_tensor", spy)
    config = ClassifierConfig(network="resnet10-w0.5", steps=6, batch_size=16, seed=1, augmentation="geometric")
    extra = (images[~train], labels[~train])
    _, history = train_classifier(images[train], labels[train], None, None, 3, config, extra=extra,
                                  extra_fraction=fraction, progress=False)
    assert (history["batch"]["real"], history["batch"]["extra"]) == expected
    assert history["steps_run"] == 6 and seen[:6] == [16] * 6
    assert history["n_extra"] == (len(extra[0]) if fraction else 0)


def test_extra_rows_enter_batches_in_the_given_share(disc_store, drawn_targets):
    """Every batch holds exactly its share of extra patches (told apart here by an impossible label mix)."""
    images, labels, train = _split(disc_store)
    drawn = drawn_targets
    real = labels[train] == 0
    config = ClassifierConfig(network="resnet10-w0.5", steps=5, batch_size=20, seed=0)
    train_classifier(images[train][real], labels[train][real], None, None, 3, config,
                     extra=(images[~train][labels[~train] == 2], labels[~train][labels[~train] == 2]),
                     extra_fraction=0.25, progress=False)
    assert [int((batch == 2).sum()) for batch in drawn] == [5] * 5


def test_unlabelled_and_bad_fractions_are_refused(disc_store):
    images, labels, train = _split(disc_store)
    config = ClassifierConfig(network="resnet10-w0.5", steps=1, batch_size=16)
    with pytest.raises(ConfigError, match="unlabelled"):
        train_classifier(images, np.full(len(images), -1), None, None, 3, config)
    with pytest.raises(ConfigError, match="synthetic_fraction"):
        train_classifier(images, labels, None, None, 3, config, extra=(images, labels), extra_fraction=1.5)
