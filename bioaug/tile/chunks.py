"""The worker side of tiling: read a chunk's regions, find nuclei, cut centred patches, write one shard.

Runs in worker processes (local or Dask), so it takes only a picklable :class:`~bioaug.tile.planning.ChunkJob`
and writes its shard atomically: a worker killed mid-chunk leaves no shard, and the chunk is simply run again.
Besides the patches, each shard's ``shard.json`` records how many nuclei were detected on tissue and how many
patches the border rule skipped, which the run's QC step sums per slide.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..slides import Slide, resample
from ..store import write_shard
from .planning import ChunkJob, Region

#: Points-mode features come from the detected nucleus nearest to the point, within this distance.
FEATURE_MATCH_UM = 4.0


def run_chunk(job: ChunkJob) -> int:
    """Read a chunk's regions, cut its patches and write its shard; returns the number of patches."""
    from ..nuclei import FEATURE_NAMES

    images: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    detections = skipped = 0
    started = time.perf_counter()
    with Slide(job.slide_path, mpp=job.slide_mpp) as slide:
        slide.set_cache_bytes(job.cache_bytes)
        for region in job.regions:
            cut = _cut_region(slide, job, region)
            images.extend(cut.images)
            rows.extend(cut.rows)
            detections += cut.detections
            skipped += cut.skipped
    size = job.patch_size
    stack = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    for row in rows:
        for name, value in zip(FEATURE_NAMES, row.pop("_features")):
            row[name] = round(float(value), 4) if np.isfinite(value) else ""
    write_shard(Path(job.store), job.shard, stack, rows, job.input_key, size,
                meta={"slide": Path(job.slide_path).name, "regions": len(job.regions), "pid": os.getpid(),
                      "seconds": round(time.perf_counter() - started, 3), "detections": detections,
                      "tissue_mm2": job.tissue_mm2, "border_skipped": skipped})
    return len(rows)


@dataclass
class _Cut:
    """Patches and manifest rows of one region, the nuclei detected on its tissue and the patches skipped."""

    images: list[np.ndarray] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    detections: int = 0
    skipped: int = 0


def _cut_region(slide: Slide, job: ChunkJob, region: Region) -> _Cut:
    """Patches and manifest rows of one region core, read once with its halo and resampled to target µm/px."""
    from ..nuclei import detect_nuclei
    from ..tissue import in_mask

    plan, halo, size = job.plan, job.halo, job.patch_size
    origin_x, origin_y = region.x - halo, region.y - halo
    rgb = slide.read_region(plan.level, origin_x, origin_y, region.width + 2 * halo, region.height + 2 * halo)
    if plan.scale != 1.0:
        rgb = resample(rgb, plan.scale)
    valid = _inside_slide(rgb.shape[:2], (origin_x, origin_y), job.level_size, plan.scale)
    nuclei = detect_nuclei(rgb, mpp=job.target_mpp, stain_reference=job.stain_reference)
    # detections in read-level pixels
    det_x = origin_x + nuclei.x / plan.scale
    det_y = origin_y + nuclei.y / plan.scale
    to_thumb = plan.downsample * job.tissue_scale
    on_tissue = in_mask(job.tissue, det_x * to_thumb, det_y * to_thumb)
    cut = _Cut()
    cut.detections = int(_in_core(det_x[on_tissue], det_y[on_tissue], region).sum())
    if job.points is not None:
        centre_x = np.asarray(job.points.x, dtype=float) / plan.downsample
        centre_y = np.asarray(job.points.y, dtype=float) / plan.downsample
        labels = np.asarray(job.points.label, dtype=object)
        features = _nearest_features(centre_x, centre_y, det_x, det_y, nuclei.features,
                                     FEATURE_MATCH_UM / plan.level_mpp)
    else:
        centre_x, centre_y, features = det_x[on_tissue], det_y[on_tissue], nuclei.features[on_tissue]
        labels = np.full(len(centre_x), job.slide_label, dtype=object)
    half = size // 2
    for index in np.flatnonzero(_in_core(centre_x, centre_y, region)):
        col = int(round((centre_x[index] - origin_x) * plan.scale)) - half
        row = int(round((centre_y[index] - origin_y) * plan.scale)) - half
        padded = padded_fraction(row, col, size, valid)
        if job.border == "skip" and padded > job.max_padded:
            cut.skipped += 1
            continue
        cut.images.append(crop(rgb, row, col, size, valid, "constant" if job.border == "constant" else "reflect"))
        cut.rows.append({"slide": slide.name, "x": round(float(centre_x[index] * plan.downsample), 2),
                         "y": round(float(centre_y[index] * plan.downsample), 2), "label": labels[index],
                         "padded_fraction": round(padded, 4), "_features": features[index]})
    return cut


def _in_core(x: np.ndarray, y: np.ndarray, region: Region) -> np.ndarray:
    return (x >= region.x) & (x < region.x + region.width) & (y >= region.y) & (y < region.y + region.height)


def _inside_slide(shape: tuple[int, int], origin: tuple[int, int], level_size: tuple[int, int],
                  scale: float) -> tuple[int, int, int, int]:
    """The part of a (resampled) region array that shows the slide, as (row0, row1, col0, col1)."""
    height, width = shape
    col0 = min(width, max(0, int(round(-origin[0] * scale))))
    row0 = min(height, max(0, int(round(-origin[1] * scale))))
    col1 = max(col0, min(width, int(round((level_size[0] - origin[0]) * scale))))
    row1 = max(row0, min(height, int(round((level_size[1] - origin[1]) * scale))))
    return row0, row1, col0, col1


def padded_fraction(row: int, col: int, size: int, valid: tuple[int, int, int, int]) -> float:
    """Fraction of the size x size patch at (row, col) that lies outside ``valid`` = (row0, row1, col0, col1)."""
    row0, row1, col0, col1 = valid
    rows = max(0, min(row + size, row1) - max(row, row0))
    cols = max(0, min(col + size, col1) - max(col, col0))
    return 1.0 - rows * cols / (size * size)


def crop(rgb: np.ndarray, row: int, col: int, size: int, valid: tuple[int, int, int, int], mode: str) -> np.ndarray:
    """A size x size crop at (row, col) of the ``valid`` part of ``rgb``, padded where it leaves it:
    ``"reflect"`` mirrors the image at its edge (without repeating the edge pixel), ``"constant"`` is white."""
    row0, row1, col0, col1 = valid
    r0, r1 = max(row, row0), min(row + size, row1)
    c0, c1 = max(col, col0), min(col + size, col1)
    inside = rgb[r0:r1, c0:c1]
    widths = ((r0 - row, row + size - r1), (c0 - col, col + size - c1), (0, 0))
    if not any(sum(pair) for pair in widths):
        return inside.copy()
    if mode == "constant" or inside.size == 0:
        return np.pad(inside, widths, mode="constant", constant_values=255)
    return np.pad(inside, widths, mode="reflect")


def _nearest_features(x: np.ndarray, y: np.ndarray, det_x: np.ndarray, det_y: np.ndarray,
                      det_features: np.ndarray, radius: float) -> np.ndarray:
    """Features of the detected nucleus nearest each point within ``radius``; NaN where none is."""
    from scipy.spatial import cKDTree

    features = np.full((len(x), det_features.shape[1]), np.nan)
    if len(det_x) and len(x):
        distance, nearest = cKDTree(np.c_[det_x, det_y]).query(np.c_[x, y], distance_upper_bound=radius)
        found = np.isfinite(distance)
        features[found] = det_features[nearest[found]]
    return features
