"""bioaug tile on a weakly stained slide: the slide's haematoxylin reference keeps its nuclei found."""
from __future__ import annotations

import numpy as np

from bioaug.example import write_example_slide
from bioaug.tile import TileConfig, planning, tile


def _recall(store, truth_csv) -> float:
    """Share of the slide's true nuclei with a detected patch centre within 3 µm (6 px at 0.5 µm/px)."""
    truth = np.genfromtxt(truth_csv, delimiter=",", names=True, dtype=None, encoding="utf-8")
    found = np.stack([store.manifest["x"], store.manifest["y"]], axis=1).astype(float)
    points = np.stack([truth["x"], truth["y"]], axis=1).astype(float)
    distances = np.sqrt(((points[:, None, :] - found[None, :, :]) ** 2).sum(-1)).min(1)
    return float((distances <= 12).mean())  # level-0 px at 0.25 µm/px


def _tile_recalls(tmp_path, tag: str) -> dict[float, float]:
    recalls = {}
    for strength in (1.0, 0.25):
        slide = tmp_path / f"example-{strength}.tiff"
        if not slide.is_file():
            write_example_slide(slide, width=1024, height=768, seed=3, hematoxylin_strength=strength)
        store = tile([slide], tmp_path / f"store-{tag}-{strength}", TileConfig(label_by="none"), progress=False)
        recalls[strength] = _recall(store, slide.with_suffix(".nuclei.csv"))
    return recalls


def test_weak_haematoxylin_slide_is_tiled_with_nearly_all_its_nuclei(tmp_path, monkeypatch):
    recalls = _tile_recalls(tmp_path, "reference")
    assert recalls[1.0] > 0.8
    assert recalls[0.25] >= recalls[1.0] - 0.15, recalls
    monkeypatch.setattr(planning, "slide_stain_reference", lambda *args: None)  # the detector's absolute scale
    absolute = _tile_recalls(tmp_path, "absolute")
    assert absolute[0.25] < absolute[1.0] - 0.3, absolute  # what the reference recovers
