"""benchmarks/detection_organs.py: reference centres, organ mapping, per-organ scores and the parameter choice."""
from __future__ import annotations

import gzip
import importlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat
from skimage.draw import disk

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "detection_organs.py"
MONUSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg-2018-train"


@pytest.fixture
def organs_script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # benchmarks are scripts, not a package
    return importlib.import_module(SCRIPT.stem)


def write_xml(path: Path, polygons: list[list[tuple[float, float]]], mpp: float | None = 0.25) -> None:
    """An Aperio-style annotation file with one region per polygon, gzip-compressed like MoNuSeg's."""
    regions = "".join("<Region><Vertices>" + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in polygon)
                      + "</Vertices></Region>" for polygon in polygons)
    attribute = f' MicronsPerPixel="{mpp}"' if mpp is not None else ""
    text = f"<Annotations{attribute}><Annotation><Regions>{regions}</Regions></Annotation></Annotations>"
    with gzip.open(path, "wt") as handle:
        handle.write(text)


def test_polygon_centroids_are_area_centroids(organs_script, tmp_path):
    square = [(10, 20), (14, 20), (14, 24), (10, 24)]
    # an L shape: its area centroid differs from the mean of its vertices
    l_shape = [(0, 0), (6, 0), (6, 2), (2, 2), (2, 6), (0, 6)]
    flat = [(50, 50), (52, 50), (54, 50)]
    write_xml(tmp_path / "a.xml.gz", [square, l_shape, flat], mpp=0.2468)
    centres, mpp = organs_script.polygon_centroids(tmp_path / "a.xml.gz")
    assert mpp == pytest.approx(0.2468)
    np.testing.assert_allclose(centres[0], [12, 22])
    # 6 x 2 bar (centre (3, 1)) and 2 x 4 bar (centre (1, 4)): (12 * 3 + 8 * 1) / 20 = 2.2 on both axes
    np.testing.assert_allclose(centres[1], [2.2, 2.2], atol=1e-9)
    np.testing.assert_allclose(centres[2], [52, 50])  # no area: the mean of its vertices
    write_xml(tmp_path / "b.xml.gz", [square], mpp=None)
    assert organs_script.polygon_centroids(tmp_path / "b.xml.gz")[1] is None


def test_mask_centres_count_components_and_merge_touching_nuclei(organs_script):
    mask = np.zeros((40, 40), np.uint8)
    mask[2:6, 2:6] = 1          # one nucleus, centre (x, y) = (3.5, 3.5)
    mask[20:24, 10:14] = 1      # two touching nuclei: one component
    mask[20:24, 14:18] = 1
    mask[30, 30] = mask[31, 31] = 1  # touching at a corner only: two components (4-connectivity)
    centres = organs_script.mask_centres(mask)
    assert len(centres) == 4
    assert [3.5, 3.5] in centres.tolist() and [13.5, 21.5] in centres.tolist()
    assert organs_script.mask_centres(np.zeros((5, 5))).shape == (0, 2)


def test_organ_mapping_covers_the_thirty_tiles_and_seven_organs(organs_script):
    counts = Counter(organs_script.ORGANS.values())
    assert len(organs_script.ORGANS) == 30
    assert counts == {"breast": 6, "kidney": 6, "liver": 6, "prostate": 6, "bladder": 2, "colon": 2, "stomach": 2}
    assert set(organs_script.ORGAN_NOTES) <= set(counts)
    if MONUSEG.is_dir():
        assert set(organs_script.ORGANS) == {path.stem for path in (MONUSEG / "images").glob("*.png")}


def test_group_scores_pool_counts_per_group(organs_script):
    groups = ["crc", "kidney", "kidney", "colon"]
    counts = np.array([[8, 2, 2], [5, 0, 5], [5, 5, 0], [0, 1, 1]])
    scores = organs_script.group_scores(groups, counts)
    assert list(scores) == ["crc", "kidney", "colon"]
    assert scores["kidney"] == {"n_images": 2, "tp": 10, "fp": 5, "fn": 5, "precision": 10 / 15,
                                "recall": 10 / 15, "f1": 20 / 30}
    assert scores["crc"]["f1"] == pytest.approx(0.8) and scores["colon"]["f1"] == 0.0
    kept = organs_script.group_scores(groups, counts, keep=[True, False, True, False])
    assert list(kept) == ["crc", "kidney"] and kept["kidney"]["f1"] == 2 * 5 / (2 * 5 + 5)
    assert organs_script.mean_f1({"crc": 0.8, "kidney": 0.6, "colon": 0.1}, ["crc", "kidney"]) == pytest.approx(0.7)


def test_leave_one_organ_out_picks_on_the_other_groups(organs_script):
    groups = ["crc", "a", "b"]
    table = np.array([[0.70, 0.50, 0.90],   # best on b
                      [0.72, 0.80, 0.50],   # best on a
                      [0.74, 0.70, 0.70]])  # best on average
    result = organs_script.leave_one_organ_out(table, groups, ["a", "b"], organs_script.best_mean)
    assert result["a"]["candidate"] == 0 and result["a"]["held_out_f1"] == 0.50
    assert result["b"]["candidate"] == 1 and result["b"]["held_out_f1"] == 0.50
    assert result["a"]["mean_f1_others"] == pytest.approx(0.80)
    assert result["b"]["f1"] == {"crc": 0.72, "a": 0.80, "b": 0.50}
    seen = []
    organs_script.leave_one_organ_out(table, groups, ["b"], lambda t, g: seen.append((t.shape, g)) or 2)
    assert seen == [((3, 2), ["crc", "a"])]  # the picker never sees the organ left out


def test_choose_keeps_crc_and_every_organ_within_their_tolerances(organs_script):
    groups = ["crc", "a", "b"]
    before = {"crc": 0.740, "a": 0.60, "b": 0.80}
    table = np.array([[0.740, 0.60, 0.80],   # today
                      [0.730, 0.90, 0.90],   # CRC falls by 0.010: out
                      [0.745, 0.80, 0.75],   # b falls by 0.05: out
                      [0.736, 0.70, 0.795]])  # within both tolerances, best mean of the rest
    assert organs_script.choose(table, groups, before, crc_tolerance=0.005, organ_tolerance=0.01) == 3
    assert organs_script.choose(table[:3], groups, before, crc_tolerance=0.005, organ_tolerance=0.01) == 0
    assert organs_script.choose(table[1:3], groups, before, crc_tolerance=0.005, organ_tolerance=0.01) == -1


def test_bootstrap_gain_resamples_images_within_groups(organs_script):
    groups = ["crc", "crc", "a", "a"]
    before = np.array([[8, 2, 2], [6, 4, 4], [5, 5, 5], [5, 5, 5]])
    same = organs_script.bootstrap_gain(groups, ["crc", "a"], before, before, draws=50)
    assert same.shape == (50, 2) and np.all(same == 0)
    # "a" gains the same on both of its images, so every resampling of it gains alike
    better = before + np.array([[0, 0, 0], [0, 0, 0], [3, -3, -3], [3, -3, -3]])
    gains = organs_script.bootstrap_gain(groups, ["crc", "a"], before, better, draws=50, seed=1)
    np.testing.assert_allclose(gains[:, 1], 0.8 - 0.5)
    assert np.all(gains[:, 0] == 0)
    np.testing.assert_array_equal(gains, organs_script.bootstrap_gain(groups, ["crc", "a"], before, better,
                                                                      draws=50, seed=1))


def nuclei_image(rng: np.random.Generator, size: int, n: int, radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Pink image with `n` purple discs of `radius_px` at random, well separated places, and their centres."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = (235, 190, 225)
    spacing = size // 4
    grid = [(r, c) for r in range(spacing // 2, size, spacing) for c in range(spacing // 2, size, spacing)]
    chosen = rng.choice(len(grid), n, replace=False)
    centres = np.array([grid[i] for i in chosen], float) + rng.uniform(-2, 2, (n, 2))
    for row, col in centres:
        image[disk((row, col), radius_px, shape=image.shape[:2])] = (80, 50, 150)
    return image, centres[:, ::-1]


def test_main_writes_per_organ_results_on_tiny_collections(organs_script, tmp_path, monkeypatch):
    """The whole script on 2 CRC images and 30 MoNuSeg-named tiles with one XML: JSON and figure written."""
    rng = np.random.default_rng(0)
    crc, monuseg = tmp_path / "crc", tmp_path / "monuseg"
    for sub in ("images", "binary_masks", "annotations"):
        (monuseg / sub).mkdir(parents=True)
    (crc / "images").mkdir(parents=True)
    for n in (1, 2):
        image, centres = nuclei_image(rng, 96, 6, 3.0 / 0.55)
        Image.fromarray(image).save(crc / "images" / f"img{n}.png")
        (crc / "annotations" / f"img{n}").mkdir(parents=True)
        savemat(crc / "annotations" / f"img{n}" / f"img{n}_detection.mat", {"detection": centres + 1})
    with_xml = "TCGA-NH-A8F7-01A-01-TS1"
    for name in organs_script.ORGANS:
        image, centres = nuclei_image(rng, 160, 5, 3.0 / 0.25)
        Image.fromarray(image).save(monuseg / "images" / f"{name}.png")
        Image.fromarray((image[..., 0] < 150).astype(np.uint8)).save(monuseg / "binary_masks" / f"{name}.png")
        if name == with_xml:
            write_xml(monuseg / "annotations" / f"{name}.xml.gz",
                      [[(x + 8 * np.cos(a), y + 8 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)]
                       for x, y in centres], mpp=0.25)
    monkeypatch.setattr(organs_script, "GRID", {"threshold": (0.018, 0.5)})
    out = tmp_path / "results" / "organs.json"
    assert organs_script.main(["--crc", str(crc), "--monuseg", str(monuseg), "--crc-images", "2",
                               "--out", str(out)]) == 0

    results = json.loads(out.read_text())
    groups = ["crc", "breast", "kidney", "liver", "prostate", "bladder", "colon", "stomach"]
    assert set(results["before"]["groups"]) == set(groups) and results["f1_table"]["groups"] == groups
    assert results["n_candidates"] == 2
    for group in groups:  # the drawn discs are found; a threshold no image reaches finds none
        assert results["before"]["groups"][group]["f1"] >= 0.9
    assert [row["f1"][0] for row in results["f1_table"]["rows"]][1] == 0.0
    assert results["best_candidate"]["changed"] == {} and results["best_candidate"]["mean_gain"] == 0
    assert results["after"]["adopted"] == "today's defaults" and results["after"]["changed"] == {}
    for pick in ("best_mean", "final_rule"):
        rows = results["leave_one_organ_out"][pick]
        assert set(rows) == set(groups[1:]) and all(row["params"] == {"threshold": 0.018} for row in rows.values())
    assert results["monuseg"]["tiles"][with_xml]["truth"] == "polygons"
    assert sum(tile["truth"] == "mask components" for tile in results["monuseg"]["tiles"].values()) == 29
    assert set(results["before"]["polygon_tiles_only"]) == {"crc", "colon"}
    assert not Path(results["data"]["crc"]).is_absolute()
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.skipif(not MONUSEG.is_dir(), reason=f"MoNuSeg not found at {MONUSEG}")
def test_real_monuseg_polygons(organs_script):
    xmls = sorted((MONUSEG / "annotations").glob("*.xml.gz"))
    assert len(xmls) == 13 and {path.name[:-len(".xml.gz")] for path in xmls} <= set(organs_script.ORGANS)
    total = 0
    for path in xmls:
        centres, mpp = organs_script.polygon_centroids(path)
        assert (mpp is None or 0.24 <= mpp <= 0.26) and len(centres) > 250  # TCGA-NH-A8F7's XML has no mpp
        assert np.all((centres >= 0) & (centres < 1000))  # inside the 1000 x 1000 tile
        total += len(centres)
    assert total == 4951  # as the data's README counts them
