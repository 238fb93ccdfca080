"""Tiling: slides in, nucleus-centred labelled patches out, for every label source, resumable."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bioaug.example import CLASS_NAMES, write_example_slide
from bioaug.nuclei import hematoxylin, match_points
from bioaug.errors import StoreError
from bioaug.store import PatchStore
from bioaug.tile import TileConfig, chunks, tile
from conftest import shared_data
from tile_helpers import interrupt_after


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """A tiny example slide (1024 x 768 px at 0.25 µm/px) and its known nuclei."""
    return write_example_slide(tmp_path_factory.mktemp("slide") / "example.tiff", width=1024, height=768, seed=3)


@pytest.fixture(scope="module")
def fine_example(tmp_path_factory):
    """An example slide with small (64 px) tiles, so that a run splits into several shards."""
    return write_example_slide(tmp_path_factory.mktemp("fine") / "fine.tiff", width=1024, height=1024, seed=5,
                               tile_size=64)


def known_nuclei(example) -> tuple[np.ndarray, list[str]]:
    with open(example.nuclei_csv) as handle:
        rows = list(csv.DictReader(handle))
    return np.array([[float(r["x"]), float(r["y"])] for r in rows]), [r["label"] for r in rows]


def test_detection_finds_the_example_nuclei(example, tmp_path):
    store = tile([example.path], tmp_path / "store", TileConfig(qc=False), progress=False)
    truth, _ = known_nuclei(example)
    found = np.c_[store.manifest["x"], store.manifest["y"]]
    tp, fp, fn = match_points(found, truth, radius=3.0 / example.mpp)  # 3 µm
    assert tp / (tp + fn) >= 0.8, (tp, fp, fn)
    assert tp / (tp + fp) >= 0.8, (tp, fp, fn)
    assert store.features().shape == (len(store), 3)
    assert np.isfinite(store.features()).all()


def test_point_labels_give_centred_patches_with_their_labels(example, tmp_path):
    config = TileConfig(label_by="points", labels=[str(example.nuclei_csv)], qc=True)
    store = tile([example.path], tmp_path / "store", config, progress=False)
    truth, labels = known_nuclei(example)
    assert len(store) == len(truth)
    assert store.class_names == sorted(CLASS_NAMES)
    assert store.images().shape == (len(truth), 32, 32, 3)
    given = {(round(x, 2), round(y, 2)): label for (x, y), label in zip(truth, labels)}
    for x, y, label in zip(store.manifest["x"], store.manifest["y"], store.manifest["label"]):
        assert given[(round(x, 2), round(y, 2))] == label
    # each patch is centred on its nucleus: haematoxylin peaks in the middle, not at the border
    density = np.stack([hematoxylin(image) for image in store.images()])
    centre = density[:, 13:19, 13:19].mean(axis=(1, 2))
    border = np.concatenate([density[:, :4].reshape(len(store), -1), density[:, -4:].reshape(len(store), -1)], 1)
    assert np.mean(centre > border.mean(axis=1)) > 0.95
    assert (tmp_path / "store" / "qc" / "example.tiff.png").is_file()
    assert store.header.provenance["inputs"]["example.tiff"]


def test_geojson_points_match_csv_points(example, tmp_path):
    truth, labels = known_nuclei(example)
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
                 "properties": {"classification": {"name": label}}} for (x, y), label in zip(truth[:40], labels)]
    geojson = tmp_path / "example.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    store = tile([example.path], tmp_path / "store", TileConfig(label_by="points", labels=[str(geojson)], qc=False),
                 progress=False)
    assert len(store) == 40
    assert set(store.manifest["label"]) <= set(CLASS_NAMES)


def test_slide_table_labels_every_detected_nucleus(example, tmp_path):
    other = write_example_slide(tmp_path / "other.tiff", width=1024, height=768, seed=4)
    table = tmp_path / "slides.csv"
    table.write_text("slide,label\nexample.tiff,tumour\nother,normal\n")
    store = tile([example.path, other.path], tmp_path / "store",
                 TileConfig(label_by="slide", labels=[str(table)], qc=False), progress=False)
    assert store.class_names == ["normal", "tumour"]
    for slide, label in (("example.tiff", "tumour"), ("other.tiff", "normal")):
        rows = store.slides == slide
        assert rows.sum() > 20 and set(store.manifest["label"][rows]) == {label}


def test_cluster_labels_follow_morphology(example, tmp_path):
    store = tile([example.path], tmp_path / "store", TileConfig(label_by="cluster", clusters=3, qc=False),
                 progress=False)
    assert store.class_names == ["cluster0", "cluster1", "cluster2"]
    assert (store.labels >= 0).mean() > 0.95
    assert len(store.header.provenance["clusters"]["centres"]) == 3
    # clusters should carry the true morphology: match patches to known nuclei and measure purity
    truth, labels = known_nuclei(example)
    from scipy.spatial import cKDTree

    distance, nearest = cKDTree(truth).query(np.c_[store.manifest["x"], store.manifest["y"]])
    matched = distance < 12
    true = np.asarray(labels)[nearest[matched]]
    found = store.labels[matched]
    purity = sum(np.unique(true[found == k], return_counts=True)[1].max() for k in np.unique(found)) / len(found)
    assert purity > 0.6


def test_interrupted_run_resumes_to_the_same_store(fine_example, tmp_path, monkeypatch):
    config = TileConfig(label_by="points", labels=[str(fine_example.nuclei_csv)], region_size=128, qc=False)
    straight = tile([fine_example.path], tmp_path / "straight", config, progress=False)
    assert len(list((tmp_path / "straight" / "shards").iterdir())) >= 2
    calls: list[str] = []
    real_run_chunk = chunks.run_chunk
    monkeypatch.setattr(chunks, "run_chunk", interrupt_after(1, calls))
    with pytest.raises(KeyboardInterrupt):
        tile([fine_example.path], tmp_path / "resumed", config, progress=False)
    assert len(list((tmp_path / "resumed" / "shards").iterdir())) == 1
    with pytest.raises(StoreError, match="incomplete|not complete"):
        PatchStore(tmp_path / "resumed")
    monkeypatch.setattr(chunks, "run_chunk", lambda job: calls.append(job.shard) or real_run_chunk(job))
    resumed = tile([fine_example.path], tmp_path / "resumed", config, progress=False)
    assert len(calls) == len(set(calls)), "a finished chunk was redone"
    assert resumed.content_hash == straight.content_hash


def test_two_workers_give_the_same_store_as_one(fine_example, tmp_path):
    base = dict(label_by="points", labels=[str(fine_example.nuclei_csv)], region_size=128, qc=False)
    one = tile([fine_example.path], tmp_path / "one", TileConfig(**base), progress=False)
    two = tile([fine_example.path], tmp_path / "two", TileConfig(**base, workers=2), progress=False)
    assert len(list((tmp_path / "two" / "shards").iterdir())) >= 2
    assert one.content_hash == two.content_hash


def test_patch_size_and_resolution_are_honoured(example, tmp_path):
    store = tile([example.path], tmp_path / "store", TileConfig(label_by="points", labels=[str(example.nuclei_csv)],
                                                                 patch_size=48, mpp=1.0, qc=False), progress=False)
    assert store.images([0]).shape == (1, 48, 48, 3)
    assert store.mpp == 1.0 and store.header.complete


def test_real_aperio_slide_tiles(tmp_path):
    slide = shared_data("openslide-cmu-1-small-region", "CMU-1-Small-Region.svs")
    store = tile([slide], tmp_path / "store", TileConfig(), progress=False)
    assert len(store) > 1000
    assert store.images([0]).shape == (1, 32, 32, 3)
    assert (tmp_path / "store" / "qc" / "CMU-1-Small-Region.svs.png").is_file()


def test_crchistophenotypes_points_give_four_classes(tmp_path):
    images = shared_data("crchistophenotypes", "images")
    labels = shared_data("crchistophenotypes", "nuclei_labels.csv")
    chosen = [images / f"img{n}.png" for n in (1, 2, 3, 4, 5, 6, 7, 8)]
    config = TileConfig(label_by="points", labels=[str(labels)], slide_mpp=0.55, qc=False)
    store = tile(chosen, tmp_path / "store", config, progress=False)
    with open(labels) as handle:
        expected = sum(row["image"] in {p.name for p in chosen} for row in csv.DictReader(handle))
    skipped = store.header.provenance["qc"]["border_skipped"]
    assert 0 < sum(skipped.values()) < 0.1 * expected, "points near the image edge are skipped, and only those"
    assert len(store) == expected - sum(skipped.values())
    assert store.manifest["padded_fraction"].max() <= config.max_padded
    assert store.class_names == ["epithelial", "fibroblast", "inflammatory", "others"]
    assert set(store.manifest["label"]) == set(store.class_names)
    assert set(store.slides) == {p.name for p in chosen}


def test_store_is_a_torch_dataset(example, tmp_path):
    from bioaug.datasets import PatchDataset

    store = tile([example.path], tmp_path / "store", TileConfig(label_by="points", labels=[str(example.nuclei_csv)],
                                                                 qc=False), progress=False)
    item = PatchDataset(Path(tmp_path / "store"))[0]
    assert item["image"].shape == (3, 32, 32) and int(item["label"]) == store.labels[0]
    assert isinstance(PatchStore(tmp_path / "store"), PatchStore)


def test_points_on_the_closing_edge_are_kept_on_the_last_pixel(example, tmp_path):
    """1-based annotations (CRCHistoPhenotypes) put some points at x == width; they are on the slide."""
    width, height = 1024, 768
    points = tmp_path / "edge.csv"
    points.write_text(f"slide,x,y,label\nexample.tiff,{width},300,edge\nexample.tiff,500,{height},edge\n"
                      "example.tiff,500,300,inner\n")
    store = tile([example.path], tmp_path / "store", TileConfig(label_by="points", labels=[str(points)],
                                                                 border="reflect", qc=False), progress=False)
    assert len(store) == 3
    assert store.manifest["x"].max() == width - 1 and store.manifest["y"].max() == height - 1
