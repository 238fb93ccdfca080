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
from bioaug.nuclei import (FEATURE_NAMES, DetectionParams, Nuclei, _features, _gradient_on_grid, detect_nuclei,
                           hematoxylin, hematoxylin_reference, match_points)

CRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "crchistophenotypes"
#: The previous detector's output on the example slide (see the file's header for how it was made).
PREVIOUS_EXAMPLE = Path(__file__).resolve().parent / "data" / "nuclei_previous_example.csv"
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
    # the lookup table holds for every 8-bit value of every channel
    every = np.random.default_rng(0).permuted(np.tile(np.arange(256, dtype=np.uint8), (3, 1)), axis=1).T
    np.testing.assert_allclose(hematoxylin(every[None]), rgb2hed(every[None])[..., 0], atol=1e-6)


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_gradient_on_grid_is_the_block_mean_of_the_full_resolution_gradient(factor):
    from scipy import ndimage as ndi

    h = hematoxylin(disc_image([[30, 25], [14, 50]], [3, 4], 0.5, shape=(61, 70)))
    params = DetectionParams()
    sigma = params.gradient_sigma_um / 0.5

    def block_mean(image):
        rows, cols = -(-image.shape[0] // factor), -(-image.shape[1] // factor)
        return np.array([[image[r * factor:(r + 1) * factor, c * factor:(c + 1) * factor].mean()
                          for c in range(cols)] for r in range(rows)])

    d_row, d_col, smooth = _gradient_on_grid(h, 0.5, factor, params)
    for got, order in ((d_row, (1, 0)), (d_col, (0, 1))):
        expected = block_mean(ndi.gaussian_filter(h, sigma, order=order, truncate=3.0)) / 0.5
        np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(smooth, block_mean(ndi.gaussian_filter(h, sigma, truncate=3.0)), atol=1e-6)


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
    {"gradient_sigma_um": float("nan")}, {"work_mpp": 0.0}, {"reference_hematoxylin": 0.0},
    {"max_stain_gain": 0.5},
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


def test_f1_on_real_crc_images_holds_at_a_quarter_of_the_haematoxylin():
    if not CRC.is_dir():
        pytest.skip(f"CRCHistoPhenotypes not found at {CRC}")
    from scipy.io import loadmat
    from skimage.io import imread

    totals = {"full": np.zeros(3, int), "weak": np.zeros(3, int), "weak, uncalibrated": np.zeros(3, int)}
    for n in (10, 40, 80):
        rgb = imread(CRC / "images" / f"img{n}.png")[..., :3]
        weak = weaken(rgb, 0.25)
        centres = loadmat(CRC / "annotations" / f"img{n}" / f"img{n}_detection.mat")["detection"] - 1
        for name, image, calibrate in (("full", rgb, True), ("weak", weak, True),
                                       ("weak, uncalibrated", weak, False)):
            reference = hematoxylin_reference(image) if calibrate else None
            nuclei = detect_nuclei(image, mpp=0.55, stain_reference=reference)
            totals[name] += match_points(np.column_stack([nuclei.x, nuclei.y]), centres, radius=6)
    f1 = {name: 2 * tp / (2 * tp + fp + fn) for name, (tp, fp, fn) in totals.items()}
    assert f1["weak"] >= f1["full"] - 0.05
    assert f1["weak, uncalibrated"] < f1["full"] - 0.3  # without the reference, weak staining loses nuclei


@pytest.fixture(scope="module")
def example_renderings(tmp_path_factory):
    """Level 0 of the example slide (1024 x 1024 px at 0.5 µm/px) at full and at a quarter of its haematoxylin,
    read through OpenSlide, with its true nucleus centres."""
    import csv

    from bioaug.example import write_example_slide
    from bioaug.slides import Slide

    images = {}
    for strength in (1.0, 0.25):
        slide = write_example_slide(tmp_path_factory.mktemp(f"h{strength}") / "example.tiff", width=1024,
                                    height=1024, mpp=0.5, seed=0, hematoxylin_strength=strength)
        with Slide(slide.path) as opened:
            images[strength] = opened.read_region(0, 0, 0, slide.width, slide.height)
    with open(slide.nuclei_csv, newline="") as handle:
        truth = np.array([[float(row["x"]), float(row["y"])] for row in csv.DictReader(handle)])
    return images, truth


def test_detector_matches_the_previous_implementation_on_the_example_slide(example_renderings):
    """Tolerance: counts within 3%, 95% of centres paired within 2 µm both ways, and per-nucleus features
    close (median differences: area 10% of the median area, eccentricity 0.08, haematoxylin 10%)."""
    previous = np.loadtxt(PREVIOUS_EXAMPLE, delimiter=",")
    images, _ = example_renderings
    nuclei = detect_nuclei(images[1.0], mpp=0.5)
    assert abs(len(nuclei) - len(previous)) <= 0.03 * len(previous)
    found = np.column_stack([nuclei.x, nuclei.y])
    tp, fp, fn = match_points(found, previous[:, :2], radius=2 / 0.5)
    assert tp >= 0.95 * len(previous) and tp >= 0.95 * len(nuclei)
    from scipy.spatial import cKDTree

    distance, nearest = cKDTree(found).query(previous[:, :2])
    paired = distance <= 2 / 0.5
    difference = np.abs(nuclei.features[nearest[paired]] - previous[paired, 2:])
    area, eccentricity, mean_h = np.median(difference, axis=0)
    assert area <= 0.1 * np.median(previous[:, 2])
    assert eccentricity <= 0.08
    assert mean_h <= 0.1 * np.median(previous[:, 4])


def test_weakly_stained_example_slide_keeps_its_nuclei(example_renderings):
    """At a quarter of the haematoxylin, with the slide's reference level the detector still finds its nuclei:
    recall against the true centres within 0.12 of the normal rendering's (without it, under half)."""
    images, truth = example_renderings

    def recall(image, reference):
        nuclei = detect_nuclei(image, mpp=0.5, stain_reference=reference)
        tp, _, fn = match_points(np.column_stack([nuclei.x, nuclei.y]), truth, radius=3 / 0.5)
        return tp / (tp + fn)

    normal = recall(images[1.0], hematoxylin_reference(images[1.0]))
    assert normal >= 0.95
    assert recall(images[0.25], hematoxylin_reference(images[0.25])) >= normal - 0.12
    assert recall(images[0.25], None) < 0.5


def weaken(rgb, strength):
    """The image with its haematoxylin optical density scaled by ``strength`` (colour deconvolution)."""
    from skimage.color import hed2rgb

    hed = rgb2hed(rgb)
    hed[..., 0] *= strength
    return np.clip(np.round(hed2rgb(hed) * 255), 0, 255).astype(np.uint8)


def test_hematoxylin_reference_follows_the_stain():
    image = disc_image(grid_centres(9, (160, 160), 40), [3] * 9, 0.5, shape=(160, 160))
    assert hematoxylin_reference(weaken(image, 0.5)) == pytest.approx(0.5 * hematoxylin_reference(image), rel=0.1)
    assert math.isnan(hematoxylin_reference(np.full((8, 8, 3), 255, np.uint8)))
    mask = np.zeros(image.shape[:2], bool)
    mask[:80] = True
    assert hematoxylin_reference(image, mask) == pytest.approx(hematoxylin_reference(image[:80]))
    with pytest.raises(ValueError):
        hematoxylin_reference(image, mask[:10])
    # several regions of one slide are pooled; glass adds nothing
    regions = [image[:80], np.full((30, 50, 3), 255, np.uint8), image[80:]]
    assert hematoxylin_reference(regions) == pytest.approx(hematoxylin_reference(image), rel=0.02)
    assert hematoxylin_reference([image[:80]], [mask[:80]]) == pytest.approx(hematoxylin_reference(image[:80]))
    with pytest.raises(ValueError):
        hematoxylin_reference(regions, [mask])


def test_stain_reference_scales_weak_slides_up_and_leaves_others_as_they_are():
    image = disc_image(grid_centres(9, (160, 160), 40), [3] * 9, 0.5, shape=(160, 160))
    plain = detect_nuclei(image, mpp=0.5)
    assert len(plain) == 9
    for reference in (None, math.nan, 2 * DetectionParams().reference_hematoxylin):
        np.testing.assert_array_equal(detect_nuclei(image, mpp=0.5, stain_reference=reference).x, plain.x)
    faint = weaken(image, 0.1)
    assert len(detect_nuclei(faint, mpp=0.5)) == 0
    found = detect_nuclei(faint, mpp=0.5, stain_reference=hematoxylin_reference(faint))
    assert match_points(np.column_stack([found.x, found.y]), np.column_stack([plain.x, plain.y]), 2) == (9, 0, 0)


def test_example_slide_rejects_a_haematoxylin_strength_out_of_range(tmp_path):
    from bioaug.example import write_example_slide

    for strength in (0.0, -1.0, 5.0):
        with pytest.raises(ConfigError):
            write_example_slide(tmp_path / "bad.tiff", width=64, height=64, hematoxylin_strength=strength)
    assert not (tmp_path / "bad.tiff").exists()
