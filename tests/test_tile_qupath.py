"""QuPath GeoJSON: the export per slide, its round trip through --label-by points, and malformed files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bioaug.errors import LabelError
from bioaug.example import write_example_slide
from bioaug.tile.labels import read_geojson_points, read_points
from bioaug.tile import TileConfig, tile
from bioaug.tile.qupath import geojson_path


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example_slide(tmp_path_factory.mktemp("qupath") / "example.tiff", width=1024, height=768, seed=3)


def test_export_reads_back_as_the_same_points_and_store(example, tmp_path):
    config = TileConfig(label_by="points", labels=[str(example.nuclei_csv)], qc=False)
    store = tile([example.path], tmp_path / "first", config, progress=False)
    path = geojson_path(store.path, "example.tiff")
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == len(store)
    feature = data["features"][0]
    assert feature["properties"]["objectType"] == "detection"
    assert set(feature["properties"]["measurements"]) == {*store.header.feature_names, "padded_fraction"}
    [points] = read_points([path])["example.tiff"]
    assert np.array_equal(points.x, store.manifest["x"]) and np.array_equal(points.y, store.manifest["y"])
    assert points.label == list(store.manifest["label"])
    again = tile([example.path], tmp_path / "again", TileConfig(label_by="points", labels=[str(path)], qc=False),
                 progress=False)
    assert again.content_hash == store.content_hash


def test_unlabelled_patches_are_exported_without_a_class(example, tmp_path):
    store = tile([example.path], tmp_path / "store", TileConfig(qc=False), progress=False)
    features = json.loads(geojson_path(store.path, "example.tiff").read_text())["features"]
    assert len(features) == len(store) and not any("classification" in f["properties"] for f in features)


def point(coordinates, **properties):
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": coordinates},
            "properties": {"classification": {"name": "tumour"}, **properties}}


BAD_GEOJSON = [
    ({"type": "FeatureCollection", "features": [1, 2]}, "feature 0 is a int"),
    ({"type": "FeatureCollection", "features": ["a"]}, "feature 0 is a str"),
    ([{"type": "Feature", "geometry": {"type": "Point"}, "properties": {"label": "x"}}], "not an \\[x, y\\]"),
    ([point(["a", 1])], "not an \\[x, y\\]"),
    ([point([1])], "not an \\[x, y\\]"),
    ([point([1, float("nan")])], "not an \\[x, y\\]"),
    ([{"type": "Feature", "geometry": "POINT (1 2)", "properties": {"label": "x"}}], "geometry is a str"),
    ([{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": [1]}],
     "properties is a list"),
    ([{"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": 5}, "properties": {"label": "x"}}],
     "MultiPoint needs"),
    ([{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[1, 2]]}, "properties": {"label": "x"}}],
     "not rings"),
    ([{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}}], "no class"),
    ({"type": "FeatureCollection", "features": {"a": 1}}, "FeatureCollection or a list"),
]


@pytest.mark.parametrize("value, problem", BAD_GEOJSON)
def test_geojson_of_the_wrong_shape_is_a_one_line_error(tmp_path, value, problem):
    path = tmp_path / "slide.geojson"
    path.write_text(json.dumps(value))
    with pytest.raises(LabelError, match=problem) as error:
        read_geojson_points(path)
    assert "\n" not in str(error.value) and str(error.value).startswith(str(path))
