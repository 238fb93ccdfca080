"""Tests of bioaug.nuclei: point matching, detection on drawn and real nuclei, and per-nucleus features."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from skimage.color import rgb2hed
from skimage.draw import disk, ellipse
from skimage.measure import regionprops

from bioaug.errors import ConfigError
from bioaug.nuclei import (FEATURE_NAMES, DetectionParams, Nuclei, _features, detect_nuclei, hematoxylin,
                           match_points)

CRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "crchistophenotypes"
PINK = (235, 190, 225)
PURPLE = (80, 50, 150)


@pytest.mark.parametrize("pred, true, radius, expected", [
    ([[10, 10]], [[10, 10]], 6, (1, 0, 0)),
    ([[10, 10], [12, 10]], [[11, 10]], 6, (1, 1, 0)),
    ([[10, 10]], [[20, 10]], 6, (0, 1, 1)),
    ([[10, 10]], [[16, 10]], 6, (1, 0, 0)),
    ([], [[1, 1], [2, 2]], 6, (0, 0, 2)),
    ([[1, 1]], [], 6, (0, 1, 0)),
    # greedy nearest matching would pair (5, 0) with (4, 0) and leave (0, 0) unmatched
    ([[5, 0], [0, 0]], [[4, 0], [9, 0]], 5, (2, 0, 0)),
    # two separate clusters are both matched
    ([[0, 0], [100, 100], [101, 100]], [[1, 0], [100, 101]], 3, (2, 1, 0)),
])
def test_match_points(pred, true, radius, expected):
    assert match_points(np.array(pred, float), np.array(true, float), radius) == expected


def disc_image(centres, radii, mpp, shape=(256, 256), colour=PURPLE, seed=0):
    """Pink background with purple discs of the given physical radii (µm), plus mild noise."""
    image = np.empty((*shape, 3), np.float64)
    image[:] = PINK
    for (row, col), radius in zip(centres, radii):
        image[disk((row, col), radius / mpp, shape=shape)] = colour
    image += np.random.default_rng(seed).normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def grid_centres(n, shape, spacing, seed=0):
    """``n`` jittered grid points at least ``spacing`` px from each other and the border."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(spacing, shape[0] - spacing + 1, spacing),
                             np.arange(spacing, shape[1] - spacing + 1, spacing), indexing="ij")
    points = np.column_stack([rows.ravel(), cols.ravel()])[:n].astype(float)
    return points + rng.uniform(-2, 2, points.shape)


def test_detects_drawn_discs():
    mpp = 0.5
    centres = grid_centres(30, (256, 300), 40)
    image = disc_image(centres, np.random.default_rng(1).uniform(2.5, 4, 30), mpp, shape=(256, 300))
    nuclei = detect_nuclei(image, mpp=mpp)
    tp, fp, fn = match_points(np.column_stack([nuclei.x, nuclei.y]), centres[:, ::-1], radius=3 / mpp)
    assert tp / (tp + fp) >= 0.9
    assert tp / (tp + fn) >= 0.9
    assert nuclei.features.shape == (len(nuclei), len(FEATURE_NAMES))
    assert nuclei.x.dtype == nuclei.y.dtype == nuclei.features.dtype == np.float64


@pytest.mark.parametrize("value", [255, 0])
def test_blank_image_has_no_nuclei(value):
    nuclei = detect_nuclei(np.full((128, 128, 3), value, np.uint8), mpp=0.5)
    assert len(nuclei) == 0
    assert nuclei.features.shape == (0, len(FEATURE_NAMES))


def test_empty_array_has_no_nuclei():
    assert len(detect_nuclei(np.zeros((0, 0, 3), np.uint8), mpp=0.5)) == 0


@pytest.mark.parametrize("image", [
    np.zeros((32, 32), np.uint8),
    np.zeros((32, 32, 4), np.uint8),
    np.zeros((32, 32, 3), np.float32),
    np.zeros((2, 32, 32, 3), np.uint8),
])
def test_rejects_non_rgb_uint8(image):
    with pytest.raises(ValueError):
        detect_nuclei(image, mpp=0.5)
    with pytest.raises(ValueError):
        hematoxylin(image)


@pytest.mark.parametrize("mpp", [0, -1, float("nan"), float("inf")])
def test_rejects_bad_mpp(mpp):
    with pytest.raises(ValueError):
        detect_nuclei(np.full((16, 16, 3), 255, np.uint8), mpp=mpp)


def test_tissue_mask_drops_nuclei_outside_it():
    mpp = 0.5
    centres = np.array([[40, 40], [40, 120]])
    image = disc_image(centres, [3, 3], mpp, shape=(80, 160))
    mask = np.zeros(image.shape[:2], bool)
    mask[:, :80] = True
    nuclei = detect_nuclei(image, mpp=mpp, tissue_mask=mask)
    assert len(nuclei) == 1 and nuclei.x[0] < 80
    with pytest.raises(ValueError):
        detect_nuclei(image, mpp=mpp, tissue_mask=mask[:10])


def test_hematoxylin_is_rgb2hed_channel():
    image = disc_image([[20, 20]], [3], 0.5, shape=(40, 40))
    h = hematoxylin(image)
    assert h.shape == image.shape[:2]
    np.testing.assert_allclose(h, rgb2hed(image)[..., 0], atol=1e-6)
    assert float(h[20, 20]) > float(h[2, 2]) >= 0


def single(image, mpp):
    nuclei = detect_nuclei(image, mpp=mpp)
    assert len(nuclei) == 1
    return dict(zip(FEATURE_NAMES, nuclei.features[0]))


def test_area_grows_with_disc_and_is_physical():
    mpp = 0.5
    small = single(disc_image([[32, 32]], [2.5], mpp, shape=(64, 64)), mpp)
    large = single(disc_image([[32, 32]], [4], mpp, shape=(64, 64)), mpp)
    assert small["area_um2"] < large["area_um2"]
    assert large["area_um2"] == pytest.approx(math.pi * 4**2, rel=0.25)


def test_area_scales_with_mpp_squared():
    # the same 3 µm nucleus imaged at two resolutions has the same physical area ...
    coarse = single(disc_image([[32, 32]], [3], 0.5, shape=(64, 64)), 0.5)
    fine = single(disc_image([[64, 64]], [3], 0.25, shape=(128, 128)), 0.25)
    assert fine["area_um2"] == pytest.approx(coarse["area_um2"], rel=0.15)
    # ... so per pixel, the area is counted in units of mpp squared
    pixels = coarse["area_um2"] / 0.5**2
    assert fine["area_um2"] / 0.25**2 == pytest.approx(4 * pixels, rel=0.15)


def test_rimmed_nucleus_is_found_at_its_centre_and_measured_whole():
    # a pale (vesicular) nucleus: dark 4 µm disc with a pale interior of 2.8 µm radius
    mpp = 0.5
    image = np.full((64, 64, 3), PINK, np.uint8)
    image[disk((32, 32), 4 / mpp)] = PURPLE
    image[disk((32, 32), 2.8 / mpp)] = (190, 160, 215)
    nuclei = detect_nuclei(image, mpp=mpp)
    assert len(nuclei) == 1
    assert np.hypot(nuclei.x[0] - 32, nuclei.y[0] - 32) <= 1
    assert nuclei.features[0, 0] == pytest.approx(math.pi * 4**2, rel=0.15)


def test_eccentricity_and_darkness():
    mpp = 0.5
    round_ = single(disc_image([[32, 32]], [3.5], mpp, shape=(64, 64)), mpp)
    image = np.full((64, 64, 3), PINK, np.uint8)
    image[ellipse(32, 32, 2.5 / mpp, 5 / mpp, shape=image.shape[:2])] = PURPLE
    elongated = single(image, mpp)  # a 2:1 ellipse has eccentricity sqrt(3) / 2
    pale = single(disc_image([[32, 32]], [3.5], mpp, shape=(64, 64), colour=(150, 120, 190)), mpp)
    assert round_["eccentricity"] < 0.5 < 0.8 < elongated["eccentricity"]
    assert pale["mean_hematoxylin"] < round_["mean_hematoxylin"]


def test_features_match_regionprops():
    rng = np.random.default_rng(0)
    labels = np.zeros((60, 60), np.int32)
    labels[ellipse(15, 15, 5, 9, rotation=0.5)] = 1
    labels[disk((40, 40), 7)] = 2
    labels[30, 5] = 3
    h = rng.uniform(0, 0.2, labels.shape)
    features = _features(h, labels, 3, mpp=0.5)
    for region, row in zip(regionprops(labels, intensity_image=h), features):
        np.testing.assert_allclose(row, [region.area * 0.25, region.eccentricity, region.intensity_mean],
                                   atol=1e-9)


def test_nuclei_length():
    assert len(Nuclei(x=np.zeros(3), y=np.zeros(3), features=np.zeros((3, 3)))) == 3


@pytest.mark.parametrize("change", [
    {"threshold": -1.0}, {"radii_um": ()}, {"radii_um": (0.0, 3.0)}, {"size_fraction": 1.0},
    {"gradient_sigma_um": float("nan")},
])
def test_params_are_validated(change):
    with pytest.raises(ConfigError):
        DetectionParams(**change)


def test_f1_on_real_crc_images():
    if not CRC.is_dir():
        pytest.skip(f"CRCHistoPhenotypes not found at {CRC}")
    from scipy.io import loadmat
    from skimage.io import imread

    totals = np.zeros(3, int)
    for n in (10, 40, 80):
        rgb = imread(CRC / "images" / f"img{n}.png")[..., :3]
        nuclei = detect_nuclei(rgb, mpp=0.55)
        # the annotation files are MATLAB 1-based
        centres = loadmat(CRC / "annotations" / f"img{n}" / f"img{n}_detection.mat")["detection"] - 1
        totals += match_points(np.column_stack([nuclei.x, nuclei.y]), centres, radius=6)
    tp, fp, fn = totals
    assert 2 * tp / (2 * tp + fp + fn) >= 0.65
