"""Tiling inputs: adding slides to an existing store, size limits checked before any read, chunking of small
slides, and a tissue masker passed by the caller."""
from __future__ import annotations

import numpy as np
import pytest

from bioaug.errors import ConfigError, SlideError, StoreError
from bioaug.example import write_example_slide
from bioaug.tile import TileConfig, planning, tile
from bioaug.tile.sources import make_label_source


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return [write_example_slide(root / f"s{seed}.tiff", width=1024, height=768, seed=seed) for seed in (3, 4)]


def test_new_slides_are_added_to_an_existing_store_with_every_slides_hash(slides, tmp_path):
    config = TileConfig(qc=False)
    together = tile([s.path for s in slides], tmp_path / "together", config, progress=False)
    tile([slides[0].path], tmp_path / "grown", config, progress=False)
    grown = tile([slides[1].path], tmp_path / "grown", config, progress=False)
    assert set(grown.slides) == {"s3.tiff", "s4.tiff"}
    assert set(grown.header.provenance["inputs"]) == {"s3.tiff", "s4.tiff"}
    assert grown.header.provenance["inputs"] == together.header.provenance["inputs"]
    assert grown.content_hash == together.content_hash


def test_a_rescan_of_the_same_name_replaces_the_old_slide_only_when_asked(slides, tmp_path):  # 19.3
    rescan = tmp_path / "rescan" / "s3.tiff"
    rescan.parent.mkdir()
    rescan.write_bytes(slides[1].path.read_bytes())
    config = TileConfig(qc=False)
    tile([slides[0].path], tmp_path / "store", config, progress=False)
    assert tile([slides[0].path], tmp_path / "store", config, progress=False).header.provenance["slide_paths"] == {
        "s3.tiff": str(slides[0].path.resolve())}  # the same file again is a resume
    with pytest.raises(SlideError, match=f"a different slide of this name \\({slides[0].path}\\)"):
        tile([rescan], tmp_path / "store", config, progress=False)
    replaced = tile([rescan], tmp_path / "store", TileConfig(qc=False, replace_slides=True), progress=False)
    alone = tile([rescan], tmp_path / "alone", config, progress=False)
    assert replaced.content_hash == alone.content_hash
    assert replaced.header.provenance["inputs"] == alone.header.provenance["inputs"]
    assert replaced.header.provenance["slide_paths"] == {"s3.tiff": str(rescan.resolve())}


def test_an_existing_store_cut_another_way_is_refused(slides, tmp_path):
    tile([slides[0].path], tmp_path / "store", TileConfig(qc=False), progress=False)
    with pytest.raises(StoreError, match="--border 'skip', this run asks 'constant'"):
        tile([slides[1].path], tmp_path / "store", TileConfig(border="constant", qc=False), progress=False)


@pytest.mark.parametrize("options, flag", [
    ({"patch_size": 100_000, "region_size": 400_000}, "--patch-size"),
    ({"region_size": 100_000}, "--region-size"),
    ({"mpp": float("inf")}, "--mpp"),
    ({"max_padded": 1.0}, "--max-padded"),
    ({"border": "wrap"}, "--border"),
])
def test_unbounded_sizes_are_refused_up_front(slides, tmp_path, options, flag):
    with pytest.raises(ConfigError, match=flag):
        tile([slides[0].path], tmp_path / "store", TileConfig(**options), progress=False)
    assert not (tmp_path / "store").exists()


def test_a_patch_larger_than_the_slide_is_refused_before_reading(slides, tmp_path):
    with pytest.raises(SlideError, match="larger than the slide"):
        tile([slides[0].path], tmp_path / "store", TileConfig(patch_size=1024, region_size=4096), progress=False)
    assert not (tmp_path / "store").exists()


def test_regions_too_large_for_memory_are_refused_before_reading(slides, tmp_path, monkeypatch):
    monkeypatch.setattr(planning, "physical_memory", lambda: 64 * 2**20)
    with pytest.raises(SlideError, match="GiB per worker"):
        tile([slides[0].path], tmp_path / "store", TileConfig(), progress=False)
    assert not (tmp_path / "store").exists()


def test_a_small_slide_splits_into_several_chunks(tmp_path):
    """Chunks, not slides, are what workers share: a 2048 x 1536 px slide (at --mpp) gives four."""
    example = write_example_slide(tmp_path / "small.tiff", width=4096, height=3072, seed=1, tile_size=256)
    config = TileConfig()
    plans, _ = planning.preflight([example.path], tmp_path / "store", config, make_label_source(config))
    assert len(plans[0].jobs) >= 4 and all(len(job.regions) == 1 for job in plans[0].jobs)


def test_a_tissue_masker_from_the_caller_decides_where_patches_come_from(slides, tmp_path):
    def left_half(overview: np.ndarray) -> np.ndarray:
        mask = np.zeros(overview.shape[:2], bool)
        mask[:, : overview.shape[1] // 2] = True
        return mask

    store = tile([slides[0].path], tmp_path / "left", TileConfig(qc=False), tissue_masker=left_half,
                 progress=False)
    margin = planning.TISSUE_MARGIN_UM / slides[0].mpp
    assert len(store) > 10 and store.manifest["x"].max() < slides[0].width / 2 + margin
    with pytest.raises(SlideError, match="tissue masker returned shape"):
        tile([slides[0].path], tmp_path / "bad", TileConfig(qc=False), tissue_masker=lambda rgb: rgb[:5],
             progress=False)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_file_and_directory_of_a_store_honours_the_umask(slides, tmp_path, umask):  # 19.9
    """Atomic writes go through temporary files (0600) and directories (0700) whose modes used to survive the
    rename: a lab-mate, or a Dask worker running as another user, could not read the store."""
    import os

    from bioaug.provenance import write_json_atomic

    previous = os.umask(umask)
    try:
        tile([slides[0].path], tmp_path / "store", TileConfig(), progress=False)
        write_json_atomic(tmp_path / "store" / "extra" / "note.json", {"a": 1})
    finally:
        os.umask(previous)
    paths = [tmp_path / "store", *(tmp_path / "store").rglob("*")]
    modes = {path.relative_to(tmp_path): (path.stat().st_mode & 0o777, 0o777 if path.is_dir() else 0o666)
             for path in paths}
    assert any(path.suffix == ".png" for path in modes) and any(path.name == "images.npy" for path in modes)
    wrong = {str(path): oct(mode) for path, (mode, full) in modes.items() if mode != full & ~umask}
    assert not wrong


def test_broken_symbolic_links_in_a_slide_folder_are_named_in_a_warning(slides, tmp_path, caplog):  # 19.6
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "s3.tiff").symlink_to(slides[0].path)
    (folder / "moved.svs").symlink_to(tmp_path / "gone.svs")
    (folder / "loop.tiff").symlink_to(folder / "loop.tiff")
    with caplog.at_level("WARNING", logger="bioaug"):
        store = tile([folder], tmp_path / "store", TileConfig(qc=False), progress=False)
    assert set(store.slides) == {"s3.tiff"}
    warned = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert f"{folder / 'loop.tiff'}: symbolic link loop; skipped" in warned
    assert f"{folder / 'moved.svs'}: dangling symbolic link (to {tmp_path / 'gone.svs'}, which does not exist); " \
           f"skipped" in warned


def test_class_names_that_differ_only_by_case_and_an_untrainable_patch_size_are_warned_about(
        slides, tmp_path, caplog):  # 19.10
    points = tmp_path / "points.csv"
    points.write_text("slide,x,y,label\ns3.tiff,300,300,Lymphocyte\ns3.tiff,500,400,lymphocyte\n"
                      "s3.tiff,700,300,tumour\n")
    config = TileConfig(label_by="points", labels=[str(points)], patch_size=48, qc=False)
    with caplog.at_level("WARNING", logger="bioaug"):
        store = tile([slides[0].path], tmp_path / "store", config, progress=False)
    assert store.class_names == ["Lymphocyte", "lymphocyte", "tumour"]
    warned = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert f"{points}: class names 'Lymphocyte' and 'lymphocyte' differ only by case and stay separate classes; " \
           f"write them alike if they are one" in warned
    assert any(line.startswith("--patch-size 48: bioaug train needs 4 * 2**n px patches") for line in warned)


# -- label files (19.5) ---------------------------------------------------------------------------------------

def _feature(geometry: dict, label: str) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": {"classification": {"name": label}}}


def _square(x: float, y: float, side: float = 20.0) -> list:
    return [[[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]]


def test_every_label_file_of_a_slide_is_used_and_reported(slides, tmp_path, caplog):
    import json

    first, second = tmp_path / "a" / "s3.geojson", tmp_path / "b" / "s3.tiff.geojson"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature({"type": "Point", "coordinates": [200, 200]}, "a"),
        _feature({"type": "MultiPolygon", "coordinates": [_square(300, 300), _square(400, 300), _square(500, 300)]},
                 "b")]}))
    second.write_text(json.dumps(_feature({"type": "Point", "coordinates": [600, 400]}, "a")))  # a lone Feature
    table = tmp_path / "points.csv"
    table.write_text("slide,x,y,label\nC:\\scans\\site2\\s3.tiff,700,500,b\nother.tiff,10,10,a\n")
    config = TileConfig(label_by="points", labels=[str(first), str(second), str(table)], qc=False)
    with caplog.at_level("INFO", logger="bioaug"):
        store = tile([slides[0].path], tmp_path / "store", config, progress=False)
    centres = sorted(zip(store.manifest["x"], store.manifest["y"], store.manifest["label"]))
    assert centres == [(200, 200, "a"), (310, 310, "b"), (410, 310, "b"), (510, 310, "b"), (600, 400, "a"),
                       (700, 500, "b")]
    said = [record.getMessage() for record in caplog.records]
    assert f"{first}: all 4 points used" in said and f"{second}: all 1 points used" in said
    assert f"{table}: 1 of its 2 points used (the others are of slides not in this run)" in said
