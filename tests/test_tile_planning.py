"""Planning: a chunk's input key covers every ``ChunkJob`` field but those it names as left out."""
from __future__ import annotations

from dataclasses import fields, replace

import numpy as np

from bioaug.slides import ReadPlan
from bioaug.tile.labels import Points
from bioaug.tile.planning import NOT_IN_INPUT_KEY, ChunkJob, Region, _tissue_window, chunk_input_key

JOB = ChunkJob(store="/stores/a", shard="a.tiff.0000", slide_path="/slides/a.tiff", slide_mpp=0.25,
               plan=ReadPlan(level=0, downsample=1.0, level_mpp=0.25, scale=0.5), level_size=(4096, 3072),
               regions=[Region(0, 0, 512, 512)], halo=40, patch_size=32, target_mpp=0.5, border="reflect",
               max_padded=0.5, tissue=np.ones((8, 8), bool), tissue_scale=0.002, tissue_mm2=0.01,
               cache_bytes=64 << 20, points=None, slide_label="", stain_reference=None)

#: Another value for every ChunkJob field (but the key itself); a new field needs one here.
OTHER = {
    "store": "/stores/b", "shard": "a.tiff.0001", "slide_path": "/moved/a.tiff", "slide_mpp": 0.5,
    "plan": ReadPlan(level=1, downsample=4.0, level_mpp=1.0, scale=2.0), "level_size": (1024, 768),
    "regions": [Region(512, 0, 512, 512)], "halo": 41, "patch_size": 64, "target_mpp": 0.25,
    "border": "skip", "max_padded": 0.25, "tissue": np.zeros((8, 8), bool), "tissue_scale": 0.004,
    "tissue_mm2": 0.02, "cache_bytes": 128 << 20, "points": Points([1.0], [2.0], ["a"]), "slide_label": "tumour",
    "stain_reference": 0.3,
}


def test_every_chunk_job_field_is_in_its_input_key_or_named_as_left_out():
    names = {f.name for f in fields(ChunkJob)} - {"input_key"}
    assert NOT_IN_INPUT_KEY - {"input_key"} <= names
    assert names <= set(OTHER), f"give the new ChunkJob field(s) {names - set(OTHER)} another value in OTHER"
    key = chunk_input_key(JOB, "slide-sha")
    for name in sorted(names):
        changed = chunk_input_key(replace(JOB, **{name: OTHER[name]}), "slide-sha") != key
        assert changed == (name not in NOT_IN_INPUT_KEY), name
    assert chunk_input_key(replace(JOB, input_key="old"), "slide-sha") == key
    assert chunk_input_key(JOB, "another-slide-sha") != key


def test_points_change_the_key_by_position_and_label():
    with_points = replace(JOB, points=Points([1.0, 5.0], [2.0, 6.0], ["a", "b"]))
    key = chunk_input_key(with_points, "slide-sha")
    for moved in (Points([1.0, 5.5], [2.0, 6.0], ["a", "b"]), Points([1.0, 5.0], [2.0, 6.0], ["a", "a"])):
        assert chunk_input_key(replace(JOB, points=moved), "slide-sha") != key


def test_the_stain_reference_reads_the_window_of_a_region_with_the_most_tissue():
    # overview at 1/10 of the read level; tissue only in the region's lower right
    tissue = np.zeros((100, 100), dtype=bool)
    tissue[70:90, 60:95] = True
    region = Region(200, 300, 800, 700)
    assert _tissue_window(region, 400, tissue, 0.1) == (600, 500, 400, 400)  # windows 200 px apart
    assert _tissue_window(region, 2000, tissue, 0.1) == (200, 300, 800, 700)  # smaller than a window: whole
