"""QuPath export: per slide, a GeoJSON of the patch centres that QuPath imports as detections.

Each patch becomes a ``Point`` feature in level-0 pixel coordinates (QuPath's image space) with
``objectType: detection``, its class as ``classification.name`` (omitted for unlabelled patches) and its
nucleus features and padded fraction as ``measurements``. The same file read back with ``--label-by points``
gives the same points with the same labels, so points corrected in QuPath can be tiled again.
"""
from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

from ..provenance import write_text_atomic
from ..store import PatchStore

QUPATH_DIR = "qupath"
#: Class colours shown by QuPath (RGB), cycled over the store's classes.
_COLOURS = ((230, 25, 75), (0, 130, 200), (255, 180, 0), (145, 30, 180), (70, 240, 240), (240, 50, 230))


def geojson_path(store: Path, slide_name: str) -> Path:
    """Where the export of one slide goes: ``STORE/qupath/<slide file name>.geojson``.

    The full file name as stem means ``--label-by points`` matches the file to its slide exactly.
    """
    return store / QUPATH_DIR / f"{slide_name}.geojson"


def export_geojson(store: PatchStore, slide_name: str) -> Path:
    """Write the patches of ``slide_name`` as a QuPath detection FeatureCollection; returns its path."""
    rows = [int(i) for i in (store.slides == slide_name).nonzero()[0]]
    measured = list(store.header.feature_names) + (["padded_fraction"] if "padded_fraction" in store.manifest
                                                   else [])
    features = []
    for index in rows:
        properties: dict = {"objectType": "detection",
                            "measurements": {name: _finite(store.manifest[name][index]) for name in measured}}
        label = store.labels[index]
        if label >= 0:
            properties["classification"] = {"name": store.class_names[label],
                                            "color": list(_COLOURS[label % len(_COLOURS)])}
        patch_id = str(store.manifest["patch_id"][index])
        features.append({"type": "Feature", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bioaug:{patch_id}")),
                         "geometry": {"type": "Point", "coordinates": [float(store.manifest["x"][index]),
                                                                       float(store.manifest["y"][index])]},
                         "properties": properties})
    path = geojson_path(store.path, slide_name)
    write_text_atomic(path, json.dumps({"type": "FeatureCollection", "features": features}) + "\n")
    return path


def _finite(value: object) -> float | None:
    """A measurement as JSON allows it: a float, or null for a missing value."""
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None
