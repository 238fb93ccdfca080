"""bioaug.classify.model and the training options around it: field of view, marker channel, test-time
augmentation, class weighting, balanced sampling and logit adjustment (tiny networks, on CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bioaug.classify import ClassifierConfig, predict_proba, save_classifier, train_classifier
from bioaug.classify.model import PatchClassifier, centre_crop, gaussian_marker
from bioaug.classify.train import (_BalancedStream, batch_class_frequency, learned_prior, load_classifier,
                                   mixture_class_weights)
from bioaug.errors import ConfigError

N_CLASSES = 3


def _model(**options) -> PatchClassifier:
    torch.manual_seed(0)
    return PatchClassifier(ClassifierConfig(network="resnet10-w0.5", **options), N_CLASSES).eval()


def _images(n: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_centre_crop_takes_the_central_pixels():
    rows = np.arange(10)[:, None].repeat(10, 1)
    images = np.stack([rows, rows.T, rows * 0], -1)[None].astype(np.uint8)  # channel 0: row, channel 1: column
    crop = centre_crop(images, 4)
    assert crop.shape == (1, 4, 4, 3)
    assert crop[0, :, 0, 0].tolist() == [3, 4, 5, 6] and crop[0, 0, :, 1].tolist() == [3, 4, 5, 6]


def test_the_view_sees_the_centre_only():
    model, images = _model(view=16), _images()
    probabilities = predict_proba(model, images)
    assert np.allclose(probabilities, predict_proba(model, centre_crop(images, 16).copy()), atol=1e-6)
    border = images.copy()
    border[:, :8] = 255 - border[:, :8]  # outside the central 16 px
    assert np.allclose(predict_proba(model, border), probabilities, atol=1e-6)
    centre = images.copy()
    centre[:, 12:20, 12:20] = 255 - centre[:, 12:20, 12:20]
    assert not np.allclose(predict_proba(model, centre), probabilities, atol=1e-3)


def test_a_view_is_resolved_from_micrometres_and_refused_when_larger_than_the_patches():
    assert ClassifierConfig(view_um=16).for_patches(64, 0.5, "store").view == 32
    assert ClassifierConfig().for_patches(64, 0.5, "store").view == 64
    with pytest.raises(ConfigError, match="store-32: the classifier's view of 48 px is larger than its 32 px") as error:
        ClassifierConfig(view=48).for_patches(32, 0.5, "store-32")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="with tta shifts of 2 px"):
        ClassifierConfig(view=32, tta="dihedral+shift").for_patches(32, 0.5, "store")
    with pytest.raises(ConfigError, match="once"):
        ClassifierConfig(view=32, view_um=16).validate()


def test_training_refuses_patches_smaller_than_the_view():
    config = ClassifierConfig(network="resnet10-w0.5", steps=1, batch_size=4, view=40)
    with pytest.raises(ConfigError, match="32 px patches are smaller than the classifier's 40 px view"):
        train_classifier(_images(8), np.arange(8) % 3, None, None, N_CLASSES, config, progress=False)


def test_the_marker_channel_reaches_the_network_centred_on_the_patch():
    model = _model(view=16, marker="gaussian", marker_sigma=3.0)
    seen = []
    model.network.register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0]))
    predict_proba(model, _images(2))
    [inputs] = seen
    assert inputs.shape == (2, 4, 16, 16)
    marker = inputs[0, 3]
    assert torch.allclose(marker, gaussian_marker(32, 3.0)[8:24, 8:24])
    assert marker[7:9, 7:9].min() > 0.9 and marker[0, 0] < 0.01  # peak at the centre of the view
    assert torch.equal(inputs[0, 3], inputs[1, 3])


def test_dihedral_tta_makes_predictions_invariant_to_flips_and_rotations():
    images = _images()
    rotated = np.rot90(images, 1, axes=(1, 2)).copy()
    flipped = images[:, :, ::-1].copy()
    plain = _model(view=24)
    assert not np.allclose(predict_proba(plain, images), predict_proba(plain, rotated), atol=1e-4)
    tta = _model(view=24, tta="dihedral")
    probabilities = predict_proba(tta, images)
    assert np.allclose(probabilities, predict_proba(tta, rotated), atol=1e-5)
    assert np.allclose(probabilities, predict_proba(tta, flipped), atol=1e-5)
    # the average of the eight orientations' probabilities, computed by hand
    inputs = torch.from_numpy(centre_crop(images, 24).copy()).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        by_hand = np.mean([torch.softmax(tta.network(torch.rot90(x, k, dims=(-2, -1))), 1).numpy()
                           for x in (inputs, inputs.flip(-1)) for k in range(4)], axis=0)
    assert np.allclose(probabilities, by_hand, atol=1e-5)


def test_shifted_crops_join_the_ensemble():
    images = _images()
    dihedral = predict_proba(_model(view=24, tta="dihedral"), images)
    shifted_model = _model(view=24, tta="dihedral+shift", tta_shift=2)
    assert len(list(shifted_model.variants(torch.zeros(1, 3, 28, 28)))) == 12
    assert not np.allclose(predict_proba(shifted_model, images), dihedral, atol=1e-5)


@pytest.mark.parametrize("weighting, power", [("inverse", 1.0), ("sqrt", 0.5), ("none", 0.0)])
def test_class_weighting_follows_its_power(weighting, power):
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = mixture_class_weights(labels, None, 0.0, 4, weighting)
    frequency = np.array([0.6, 0.3, 0.1])
    assert weights[3] == 0
    assert np.allclose(weights[:3], (3 * frequency) ** -power)


def test_balanced_sampling_draws_every_class_equally_often():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    stream = _BalancedStream(labels, np.random.default_rng(0))
    drawn = labels[np.concatenate([stream.take(64) for _ in range(50)])]
    counts = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(counts, 1 / 3, atol=0.03)
    assert np.allclose(batch_class_frequency(labels, None, 0.0, 3, "balanced"), 1 / 3)


def test_balanced_sampler_reaches_the_training_batches(disc_store, drawn_targets):
    drawn = drawn_targets
    images, labels = disc_store.images(), disc_store.labels
    keep = np.flatnonzero(labels == 0)[:40].tolist() + np.flatnonzero(labels == 1)[:4].tolist()
    config = ClassifierConfig(network="resnet10-w0.5", steps=10, batch_size=32, sampler="balanced")
    train_classifier(images[keep], labels[keep], None, None, N_CLASSES, config, progress=False)
    share = np.concatenate(drawn).mean()  # class 1 is 4 of 44 patches, but half of every batch's draws
    assert 0.35 < share < 0.65


def test_balanced_extra_sampling_balances_the_synthetic_share(disc_store, drawn_targets):
    drawn = drawn_targets
    images, labels = disc_store.images(), disc_store.labels
    real = np.flatnonzero(labels == 0)[:20]
    extra = np.flatnonzero(labels == 1)[:30].tolist() + np.flatnonzero(labels == 2)[:3].tolist()
    for sampler, low, high in (("uniform", 0.0, 0.2), ("balanced", 0.35, 0.65)):
        drawn.clear()
        config = ClassifierConfig(network="resnet10-w0.5", steps=10, batch_size=32, extra_sampler=sampler)
        _, history = train_classifier(images[real], labels[real], None, None, N_CLASSES, config,
                                      extra=(images[extra], labels[extra]), extra_fraction=0.5, progress=False)
        extra_share = np.concatenate([batch[16:] for batch in drawn])  # the last 16 of each batch are extra
        assert low <= (extra_share == 2).mean() <= high, sampler  # class 2 is 3 of 33 extra patches
    assert np.allclose(history["prior"], learned_prior(
        batch_class_frequency(labels[real], labels[extra], 0.5, N_CLASSES, "uniform", "balanced"),
        np.asarray(history["class_weights"])))


def test_logit_adjustment_subtracts_tau_times_the_learned_log_prior():
    prior = learned_prior(np.array([0.7, 0.2, 0.1]), np.ones(3))
    assert np.allclose(prior, [0.7, 0.2, 0.1])
    assert np.allclose(learned_prior(np.array([0.7, 0.2, 0.1]), np.array([1 / 0.7, 5, 10])), 1 / 3)
    images = _images()
    plain, adjusted = _model(view=16), _model(view=16, logit_adjustment=1.0)
    for model in (plain, adjusted):
        model.set_prior(prior)
    inputs = torch.from_numpy(centre_crop(images, 16).copy()).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        assert torch.allclose(adjusted(inputs), plain(inputs) - torch.log(torch.tensor(prior, dtype=torch.float32)),
                              atol=1e-5)
        adjusted.train()
        assert torch.allclose(adjusted(inputs), plain.train()(inputs), atol=1e-5)  # training sees raw logits


def test_a_saved_classifier_reloads_with_its_view_marker_and_tta(disc_store, tmp_path):
    images, labels = disc_store.images(), disc_store.labels
    config = ClassifierConfig(network="resnet10-w0.5", steps=4, batch_size=16, view=24, marker="gaussian",
                              tta="dihedral", logit_adjustment=0.5, class_weighting="none")
    model, history = train_classifier(images, labels, None, None, N_CLASSES, config, progress=False)
    assert np.allclose(np.exp(model.log_prior.numpy()), history["prior"], atol=1e-6)
    save_classifier(model, tmp_path / "model.pt")
    again = load_classifier(tmp_path / "model.pt", config, N_CLASSES)
    assert np.allclose(predict_proba(again, images[:8]), predict_proba(model, images[:8]), atol=1e-6)


def test_no_patches_give_empty_predictions_and_features():
    model = _model(view=16)
    empty = np.zeros((0, 32, 32, 3), dtype=np.uint8)
    assert predict_proba(model, empty).shape == (0, N_CLASSES)
    from bioaug.classify import extract_features
    assert extract_features(model, empty).shape == (0, extract_features(model, _images(1)).shape[1])
