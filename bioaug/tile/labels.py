"""Label inputs of the tile stage: annotated points (CSV or GeoJSON), a slide-level table, or morphology
clusters; the label sources (``sources``) read them through this module.

Slides are matched to table rows by file name (``img1.png``) or by stem (``img1``), since annotation tools
export either.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Sequence

import numpy as np

from ..errors import LabelError

SLIDE_COLUMNS = ("slide", "image")


@dataclass
class Points:
    """Annotated nucleus centres of one slide, in level-0 pixels, with their class names."""

    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    label: list[str] = field(default_factory=list)
    source: str = ""
    #: Level-0 px² of the polygon a point is the centroid of (0 for a point), so regions can be told from nuclei
    area: list[float] = field(default_factory=list)

    def add(self, x: float, y: float, label: str, area: float = 0.0) -> None:
        self.x.append(float(x))
        self.y.append(float(y))
        self.label.append(label)
        self.area.append(float(area))


def slide_key(name: str) -> str:
    """The key a slide is known by in label tables: its file name without directories (Windows ones too:
    ``C:\\scans\\ex.tiff`` is ``ex.tiff``)."""
    return PureWindowsPath(name).name if "\\" in name else Path(name).name


def lookup(table: dict[str, object], slide_name: str) -> object | None:
    """The entry for a slide by exact file name, else by stem."""
    name = slide_key(slide_name)
    if name in table:
        return table[name]
    return table.get(Path(name).stem)


def _read_csv_rows(path: Path, required: Sequence[str]) -> tuple[str, list[dict[str, str]]]:
    """Rows of a CSV and the name of its slide column, checking the required columns are there."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelError(path, f"cannot read CSV ({exc})") from None
    slide_column = next((c for c in SLIDE_COLUMNS if c in columns), None)
    missing = [c for c in required if c not in columns]
    if slide_column is None or missing:
        need = ["slide (or image)", *required]
        raise LabelError(path, f"needs columns {', '.join(need)}; found {', '.join(columns) or 'none'}")
    return slide_column, rows


def read_point_csv(path: Path) -> dict[str, Points]:
    """``slide,x,y,label`` rows (``image`` accepted for ``slide``) grouped by slide."""
    slide_column, rows = _read_csv_rows(path, ("x", "y", "label"))
    table: dict[str, Points] = {}
    for line, row in enumerate(rows, start=2):
        try:
            x, y = float(row["x"]), float(row["y"])
        except ValueError:
            x = y = math.nan
        if not (math.isfinite(x) and math.isfinite(y)):
            raise LabelError(path, f"line {line}: x and y must be finite numbers, got {row['x']!r}, {row['y']!r}")
        if not row["label"]:
            raise LabelError(path, f"line {line}: empty label")
        table.setdefault(slide_key(row[slide_column]), Points(source=str(path))).add(x, y, row["label"])
    return table


def read_geojson_points(path: Path) -> Points:
    """Points from a QuPath-style GeoJSON export: Point/MultiPoint features, or polygon centroids.

    The class is ``properties.classification.name`` (QuPath) or ``properties.label``/``properties.name``.
    Anything of the wrong shape (a feature that is not an object, a point without two numbers) is a
    ``LabelError`` naming the file and the feature.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelError(path, f"not valid GeoJSON ({exc.__class__.__name__})") from None
    if isinstance(data, dict) and data.get("type") == "Feature":  # one object, exported on its own
        data = [data]
    features = data.get("features", []) if isinstance(data, dict) else data
    if not isinstance(features, list):
        raise LabelError(path, "GeoJSON must be a FeatureCollection or a list of features")
    points = Points(source=str(path))
    for number, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise LabelError(path, f"feature {number} is a {type(feature).__name__}, not a GeoJSON object")
        props = _object(path, number, feature, "properties")
        classification = props.get("classification") or {}
        label = classification.get("name") if isinstance(classification, dict) else None
        label = label or props.get("label") or props.get("name")
        if not label or not isinstance(label, (str, int)):
            raise LabelError(path, f"feature {number} has no class (properties.classification.name)")
        for x, y, area in _geometry_centres(path, number, _object(path, number, feature, "geometry")):
            points.add(x, y, str(label), area)
    return points


def _object(path: Path, number: int, feature: dict, key: str) -> dict:
    """``feature[key]`` as a dict (missing or null: empty), or a one-line error."""
    value = feature.get(key) or {}
    if not isinstance(value, dict):
        raise LabelError(path, f"feature {number}: {key} is a {type(value).__name__}, not an object")
    return value


def _xy(path: Path, number: int, value: object) -> tuple[float, float]:
    """A position ``[x, y, ...]`` as two finite floats, or a one-line error."""
    if (isinstance(value, (list, tuple)) and len(value) >= 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value[:2])
            and all(math.isfinite(v) for v in value[:2])):
        return float(value[0]), float(value[1])
    raise LabelError(path, f"feature {number}: coordinates {json.dumps(value)[:60]} are not an [x, y] position")


def _geometry_centres(path: Path, number: int, geometry: dict) -> list[tuple[float, float, float]]:
    """``(x, y, area)`` of every point of a geometry: a point (area 0), or each polygon's centroid and area
    (a MultiPolygon of many nuclei is many nuclei, not one at their joint centroid)."""
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Point":
        return [(*_xy(path, number, coords), 0.0)]
    if kind == "MultiPoint":
        if not isinstance(coords, list) or not coords:
            raise LabelError(path, f"feature {number}: a MultiPoint needs a list of positions")
        return [(*_xy(path, number, c), 0.0) for c in coords]
    if kind in ("Polygon", "MultiPolygon"):
        from shapely.errors import GEOSException
        from shapely.geometry import shape
        try:
            shaped = shape(geometry)
            parts = list(shaped.geoms) if kind == "MultiPolygon" else [shaped]
            centres = [(part.centroid, part.area) for part in parts if not part.is_empty]
        except (GEOSException, ValueError, TypeError, IndexError, AttributeError):
            raise LabelError(path, f"feature {number}: {kind} coordinates are not rings of positions") from None
        if not centres:
            raise LabelError(path, f"feature {number}: {kind} is empty")
        return [(centre.x, centre.y, area) for centre, area in centres]
    raise LabelError(path, f"feature {number}: geometry {kind!r} is not a point or polygon")


def read_points(paths: Sequence[str | Path]) -> dict[str, list[Points]]:
    """Point annotations from CSV tables and per-slide GeoJSON files (matched to slides by file stem): for each
    slide key, the points of every file that has some, one ``Points`` per file, so that none replaces another."""
    table: dict[str, list[Points]] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise LabelError(path, "no such file")
        if path.suffix.lower() in (".geojson", ".json"):
            table.setdefault(path.stem, []).append(read_geojson_points(path))
        else:
            for name, points in read_point_csv(path).items():
                table.setdefault(name, []).append(points)
    return table


def read_slide_labels(path: str | Path) -> dict[str, str]:
    """A ``slide,label`` table: one class for every nucleus detected on that slide."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(path, "no such file")
    slide_column, rows = _read_csv_rows(path, ("label",))
    table: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        key = slide_key(row[slide_column])
        if not row["label"]:
            raise LabelError(path, f"line {line}: empty label")
        if table.get(key, row["label"]) != row["label"]:
            raise LabelError(path, f"line {line}: slide {key} has two labels")
        table[key] = row["label"]
    return table


def cluster_names(k: int) -> list[str]:
    """Class names for ``k`` morphology clusters."""
    return [f"cluster{index}" for index in range(k)]


def cluster_features(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, dict]:
    """Cluster nuclei by standardised morphology features with k-means.

    Returns the cluster index per row (rows with missing features get -1) and a description of the fitted
    model (feature means, scales and centres) to record in the store header.
    """
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    valid = np.isfinite(features).all(axis=1)
    if valid.sum() < k:
        raise LabelError(None, f"{int(valid.sum())} nuclei with features cannot form {k} clusters")
    scaler = StandardScaler().fit(features[valid])
    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(scaler.transform(features[valid]))
    assignment = np.full(len(features), -1, dtype=np.int64)
    assignment[valid] = model.labels_
    description = {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
                   "centres": model.cluster_centers_.tolist(), "seed": seed}
    return assignment, description
