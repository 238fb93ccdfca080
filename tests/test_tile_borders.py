"""Patches that reach past the slide's edge: their padded fraction, and what each --border mode does."""
from __future__ import annotations

import numpy as np
import pytest

from bioaug.example import write_example_slide
from bioaug.tile import TileConfig, tile

WIDTH, HEIGHT, HALF = 1024, 768, 16
#: (x, y) of a point, and the fraction of its 32 px patch (centre pixel at index 16) outside the slide
POINTS = {
    "corner": ((0, 0), 1 - 16 * 16 / 32**2),
    "far_corner": ((WIDTH - 1, HEIGHT - 1), 1 - 17 * 17 / 32**2),
    "edge": ((500, 0), 1 - 16 / 32),
    "near_edge": ((500, 14), 2 / 32),
    "inside": ((500, 300), 0.0),
}


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """The example slide and a point table with one point per case of ``POINTS`` (its name as label)."""
    example = write_example_slide(tmp_path_factory.mktemp("border") / "example.tiff", width=WIDTH, height=HEIGHT,
                                  seed=3)
    table = example.path.with_name("points.csv")
    table.write_text("slide,x,y,label\n" + "".join(f"example.tiff,{x},{y},{name}\n"
                                                   for name, ((x, y), _) in POINTS.items()))
    return example, table


def tiled(slide, tmp_path, border: str):
    example, table = slide
    config = TileConfig(label_by="points", labels=[str(table)], mpp=0.25, border=border, qc=False)
    store = tile([example.path], tmp_path / border, config, progress=False)
    return store, {label: store.image(i) for i, label in enumerate(store.manifest["label"])}


@pytest.mark.parametrize("border", ["constant", "reflect"])
def test_padded_fraction_at_corners_edges_and_inside(slide, tmp_path, border):
    store, _ = tiled(slide, tmp_path, border)
    found = dict(zip(store.manifest["label"], store.manifest["padded_fraction"]))
    assert set(found) == set(POINTS)
    for name, (_, fraction) in POINTS.items():
        assert found[name] == pytest.approx(fraction, abs=1e-4), name


def test_constant_border_is_white_outside_the_slide(slide, tmp_path):
    _, patches = tiled(slide, tmp_path, "constant")
    corner = patches["corner"]
    assert (corner[:HALF] == 255).all() and (corner[:, :HALF] == 255).all()
    assert (corner[HALF:, HALF:] < 250).any(), "the part on the slide shows tissue"
    assert (patches["far_corner"][HALF + 1:] == 255).all() and (patches["far_corner"][:, HALF + 1:] == 255).all()


def test_reflect_border_mirrors_the_slide_at_its_edge(slide, tmp_path):
    _, patches = tiled(slide, tmp_path, "reflect")
    corner, edge = patches["corner"].astype(int), patches["edge"].astype(int)
    for k in range(1, HALF):
        assert (corner[HALF - k] == corner[HALF + k]).all() and (corner[:, HALF - k] == corner[:, HALF + k]).all()
        assert (edge[HALF - k] == edge[HALF + k]).all()
    assert not (corner == 255).all(axis=-1).any(), "no white padding"


def test_skip_drops_patches_mostly_outside_and_counts_them(slide, tmp_path, caplog):
    store, patches = tiled(slide, tmp_path, "skip")
    assert set(patches) == {"near_edge", "inside"}, "default --max-padded 0.1 keeps 2 padded rows of 32"
    near = patches["near_edge"].astype(int)
    assert (near[1] == near[3]).all() and (near[0] == near[4]).all(), "kept patches are mirror-padded"
    assert store.header.provenance["qc"]["border_skipped"] == {"example.tiff": 3}
    assert store.manifest["padded_fraction"].max() <= 0.1
