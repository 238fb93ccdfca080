"""Slides to a labelled patch store: plan regions, read them once, find nuclei, cut centred patches.

A run has three steps. *Preflight* opens every slide and label table in the calling process, so bad input
fails with a one-line error before anything is written. *Chunks* (a few rows of tile-aligned regions of one
slide) then run on worker processes, or on any ``concurrent.futures.Executor`` such as a Dask or Ray
cluster's, each writing one store shard atomically; a rerun skips chunks whose shard exists with the same
inputs. *Finish* assigns cluster labels if asked, writes per-slide QC pictures and seals the store header.

Coordinates: a region is read at the pyramid level nearest the target resolution (never coarser), then
resampled by ``ReadPlan.scale`` to the target µm/px. Each region is read with a halo so that patches near its
edge are whole; a region's core owns the nuclei whose centres fall inside it, so none is cut twice. Manifest
``x``/``y`` are nucleus centres in level-0 pixels; a patch's centre pixel is at index ``patch_size // 2``.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import config_to_dict, option
from .errors import ConfigError, LabelError, SlideError, StoreError
from .labels import Points, cluster_features, cluster_names, lookup, read_points, read_slide_labels
from .provenance import atomic_path, run_record, sha256_file, sha256_json
from .slides import ReadPlan, Slide, expand_slide_paths
from .store import UNLABELLED, PatchStore, StoreHeader, StoreWriter, write_shard

log = logging.getLogger("bioaug")

LABEL_SOURCES = ("none", "points", "slide", "cluster")
#: Region rows per chunk: large enough that OpenSlide's cache serves the halos between rows of one chunk,
#: small enough that one slide splits over several workers.
CHUNK_ROWS = 2
#: Context around a region core for detection, in µm, beyond the patch radius.
DETECTION_CONTEXT_UM = 8.0
#: Points-mode features come from the detected nucleus nearest to the point, within this distance.
FEATURE_MATCH_UM = 4.0
#: Tissue masks are widened by this much so nuclei on thin tissue edges are kept.
TISSUE_MARGIN_UM = 20.0
THUMBNAIL_SIDE = 2048


@dataclass
class TileConfig:
    """Options of ``bioaug tile``; every field is also a ``--flag`` and a config-file key."""

    patch_size: int = option(32, "patch edge in pixels at the target resolution")
    mpp: float = option(0.5, "target resolution in µm/px; patches are resampled to it")
    slide_mpp: float | None = option(None, "µm/px for slides that record none (plain PNG/JPEG/TIFF)")
    label_by: str = option("none", "label source", choices=LABEL_SOURCES)
    labels: list[str] = option([], "label files: point CSV (slide,x,y,label) or GeoJSON for 'points'; "
                                   "a slide,label CSV for 'slide'")
    clusters: int = option(4, "number of morphology clusters for --label-by cluster")
    workers: int = option(1, "worker processes")
    region_size: int = option(2048, "edge of the regions read at once, in target pixels")
    min_tissue: float = option(0.01, "skip regions whose tissue fraction is below this")
    cache_mb: int = option(256, "OpenSlide tile cache per worker, in MiB")
    seed: int = option(0, "seed for clustering")
    qc: bool = option(True, "write a QC picture per slide")

    def validate(self) -> None:
        checks = [
            (self.patch_size >= 8, "patch_size", "must be at least 8"),
            (self.mpp > 0, "mpp", "must be positive"),
            (self.slide_mpp is None or self.slide_mpp > 0, "slide_mpp", "must be positive"),
            (self.workers >= 1, "workers", "must be at least 1"),
            (self.region_size >= 4 * self.patch_size, "region_size", "must be at least 4 x patch_size"),
            (0 <= self.min_tissue <= 1, "min_tissue", "must be within [0, 1]"),
            (self.clusters >= 2, "clusters", "must be at least 2"),
            (self.label_by in ("none", "cluster") or bool(self.labels), "labels",
             f"--label-by {self.label_by} needs --labels FILE"),
        ]
        for ok, name, problem in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')}", problem)


@dataclass(frozen=True)
class Region:
    """A region core in read-level pixels."""

    x: int
    y: int
    width: int
    height: int


@dataclass
class ChunkJob:
    """Everything a worker needs to turn some regions of one slide into one shard (picklable)."""

    store: str
    shard: str
    input_key: str
    slide_path: str
    slide_mpp: float | None
    plan: ReadPlan
    regions: list[Region]
    halo: int
    patch_size: int
    target_mpp: float
    tissue: np.ndarray
    tissue_scale: float
    cache_bytes: int
    points: Points | None = None
    slide_label: str = UNLABELLED


@dataclass
class SlidePlan:
    """One slide's preflight result: its read plan, tissue mask and chunk jobs."""

    path: Path
    name: str
    sha256: str
    dimensions: tuple[int, int]
    thumbnail: np.ndarray
    tissue: np.ndarray
    tissue_scale: float
    jobs: list[ChunkJob] = field(default_factory=list)


def tile(slides: Sequence[str | Path], out: str | Path, config: TileConfig | None = None, *,
         executor: Executor | None = None, progress: bool = True) -> PatchStore:
    """Tile ``slides`` (files or directories) into the patch store ``out`` and return it.

    Parameters
    ----------
    slides
        Slide files (any OpenSlide format, or plain images) or directories holding them.
    out
        Store directory; reused and resumed when it holds a store from the same settings.
    config
        Tiling options; defaults: 32 px patches at 0.5 µm/px, detected nuclei, no labels.
    executor
        Where chunks run. ``None`` uses ``config.workers`` local processes; pass a distributed engine's
        executor (``dask.distributed.Client(...).get_executor()``, Ray's, ...) to spread slides over a cluster.
    """
    config = config or TileConfig()
    config.validate()
    out = Path(out)
    plans, class_names, label_inputs = _preflight(slides, out, config)
    if not any(job.regions for plan in plans for job in plan.jobs):
        names = ", ".join(plan.name for plan in plans[:3]) + (" ..." if len(plans) > 3 else "")
        what = "no annotated points fall on" if config.label_by == "points" else "no tissue found in"
        raise SlideError(plans[0].path if len(plans) == 1 else names, f"{what} the slide(s); nothing to tile")
    feature_names = list(_feature_names())
    inputs = {plan.name: plan.sha256 for plan in plans} | label_inputs
    header = StoreHeader(patch_size=config.patch_size, mpp=config.mpp, class_names=class_names,
                         feature_names=feature_names, kind="real",
                         provenance=run_record(config_to_dict(config), inputs))
    writer = StoreWriter(out, header)
    _remove_unplanned_shards(out, plans)
    jobs = [job for plan in plans for job in plan.jobs]
    todo = [job for job in jobs if not writer.is_complete(job.shard, job.input_key)]
    skipped = len(jobs) - len(todo)
    if skipped:
        log.info("%s: resuming, %d of %d chunks already done", out, skipped, len(jobs))
    _run_jobs(todo, config.workers, executor, progress, total_slides=len(plans))
    if config.label_by == "cluster":
        _assign_clusters(writer, config)
    store = writer.finalize()
    if config.qc:
        for plan in plans:
            write_qc_picture(out / "qc" / f"{plan.name}.png", plan, store)
    for name, count in store.header.counts.items():
        if count == 0:
            log.warning("%s: class %r has no patches", out, name)
    return store


def _feature_names() -> tuple[str, ...]:
    from .nuclei import FEATURE_NAMES

    return FEATURE_NAMES


def _preflight(slides: Sequence[str | Path], out: Path, config: TileConfig
               ) -> tuple[list[SlidePlan], list[str], dict[str, str]]:
    """Open every slide and label table and plan the chunks; raises on any bad input before writing."""
    paths = expand_slide_paths(list(slides))
    points: dict[str, Points] = {}
    slide_labels: dict[str, str] = {}
    label_inputs = {f"labels:{Path(p).name}": sha256_file(p) for p in config.labels if Path(p).is_file()}
    if config.label_by == "points":
        points = read_points(config.labels)
    elif config.label_by == "slide":
        slide_labels = read_slide_labels(config.labels[0])
    names = {p.name for p in paths} | {p.stem for p in paths}
    table = points if config.label_by == "points" else slide_labels
    unknown = sorted(key for key in table if key not in names)
    if unknown:
        log.warning("%s: %d labelled slides are not among the inputs (e.g. %s)", config.labels[0], len(unknown),
                    unknown[0])
    plans = []
    for path in paths:
        with Slide(path, mpp=config.slide_mpp) as slide:
            slide_points = lookup(points, slide.name) if config.label_by == "points" else None
            label = UNLABELLED
            if config.label_by == "points":
                if slide_points is None:
                    log.warning("%s: no annotated points for this slide; it gives no patches", path)
                    slide_points = Points()
                slide_points = _points_inside(Path(slide_points.source or config.labels[0]), slide, slide_points)
            elif config.label_by == "slide":
                label = lookup(slide_labels, slide.name)  # type: ignore[assignment]
                if label is None:
                    raise LabelError(config.labels[0], f"no label for slide {slide.name}")
            plans.append(_plan_slide(slide, out, config, slide_points, label))
    if config.label_by == "points":
        class_names = sorted({lab for plan in plans for job in plan.jobs for lab in (job.points.label if job.points else [])})
    elif config.label_by == "slide":
        class_names = sorted({job.slide_label for plan in plans for job in plan.jobs})
    elif config.label_by == "cluster":
        class_names = cluster_names(config.clusters)
    else:
        class_names = []
    return plans, class_names, label_inputs


def _points_inside(source: Path, slide: Slide, points: Points) -> Points:
    """The points of a slide, checked to lie on it; points on its closing edge move onto its last pixel.

    Annotation tools that count pixels from 1 (MATLAB, as in CRCHistoPhenotypes) put a few points at
    x == width or y == height: on the image's extent, not beyond it. Anything further out is an error.
    """
    width, height = slide.dimensions
    x, y = np.asarray(points.x, dtype=float), np.asarray(points.y, dtype=float)
    outside = (x < 0) | (y < 0) | (x > width) | (y > height)
    if outside.any():
        first = int(np.argmax(outside))
        raise LabelError(source, f"{int(outside.sum())} points of {slide.name} lie outside the slide "
                                 f"({width} x {height}), e.g. ({x[first]:g}, {y[first]:g})")
    on_edge = (x == width) | (y == height)
    if not on_edge.any():
        return points
    log.info("%s: %d point(s) of %s on the slide's closing edge moved onto its last pixel", source,
             int(on_edge.sum()), slide.name)
    return Points(np.minimum(x, width - 1).tolist(), np.minimum(y, height - 1).tolist(), list(points.label),
                  source=points.source)


def _plan_slide(slide: Slide, out: Path, config: TileConfig, points: Points | None, label: str) -> SlidePlan:
    """Tissue mask, tile-aligned region grid and chunk jobs of one slide."""
    from scipy import ndimage as ndi

    from .tissue import mask_fraction, tissue_mask

    thumbnail, thumb_scale = slide.thumbnail(THUMBNAIL_SIDE)
    tissue = tissue_mask(thumbnail)
    if not tissue.any() and points is None:
        log.warning("%s: no tissue found; it gives no patches", slide.path)
    margin = int(math.ceil(TISSUE_MARGIN_UM / slide.mpp * thumb_scale))
    widened = ndi.binary_dilation(tissue, iterations=margin) if margin and tissue.any() else tissue
    plan = slide.plan_for(config.mpp)
    level_width, level_height = slide.level_dimensions[plan.level]
    tile_edge = max(1, int(round(slide.tile_size)))
    core = max(tile_edge, int(round(config.region_size / plan.scale / tile_edge)) * tile_edge)
    radius_target = config.patch_size / 2 + DETECTION_CONTEXT_UM / config.mpp
    halo = int(math.ceil(radius_target / plan.scale)) + 2
    to_thumb = plan.downsample * thumb_scale
    rows = []
    for y in range(0, level_height, core):
        row = []
        for x in range(0, level_width, core):
            region = Region(x, y, min(core, level_width - x), min(core, level_height - y))
            box = (x * to_thumb, y * to_thumb, (x + region.width) * to_thumb, (y + region.height) * to_thumb)
            has_points = points is not None and _points_in(points, region, plan.downsample).any()
            if has_points or (points is None and mask_fraction(tissue, box) >= config.min_tissue and tissue.any()):
                row.append(region)
        rows.append(row)
    slide_hash = sha256_file(slide.path)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", slide.name)
    jobs = []
    detection = _detection_key()
    for index, start in enumerate(range(0, len(rows), CHUNK_ROWS)):
        regions = [r for row in rows[start:start + CHUNK_ROWS] for r in row]
        chunk_points = _subset_points(points, regions, plan.downsample) if points is not None else None
        key = sha256_json({"slide": slide_hash, "regions": [r.__dict__ for r in regions], "plan": plan.__dict__,
                           "halo": halo, "patch": config.patch_size, "mpp": config.mpp, "detection": detection,
                           "points": [chunk_points.x, chunk_points.y, chunk_points.label] if chunk_points else None,
                           "label": label,
                           "slide_mpp": slide.mpp})
        jobs.append(ChunkJob(store=str(out), shard=f"{stem}.{index:04d}", input_key=key, slide_path=str(slide.path),
                             slide_mpp=slide.mpp, plan=plan, regions=regions, halo=halo,
                             patch_size=config.patch_size, target_mpp=config.mpp, tissue=widened,
                             tissue_scale=thumb_scale, cache_bytes=config.cache_mb << 20, points=chunk_points,
                             slide_label=label))
    return SlidePlan(path=slide.path, name=slide.name, sha256=slide_hash, dimensions=slide.dimensions,
                     thumbnail=thumbnail, tissue=tissue, tissue_scale=thumb_scale, jobs=jobs)


def _detection_key() -> dict[str, Any]:
    from .nuclei import DetectionParams

    return DetectionParams().__dict__


def _points_in(points: Points, region: Region, downsample: float) -> np.ndarray:
    """Which points (level-0 px) fall in a region core (read-level px)."""
    x = np.asarray(points.x) / downsample
    y = np.asarray(points.y) / downsample
    return (x >= region.x) & (x < region.x + region.width) & (y >= region.y) & (y < region.y + region.height)


def _subset_points(points: Points, regions: list[Region], downsample: float) -> Points:
    keep = np.zeros(len(points.x), dtype=bool)
    for region in regions:
        keep |= _points_in(points, region, downsample)
    chosen = np.flatnonzero(keep)
    return Points([points.x[i] for i in chosen], [points.y[i] for i in chosen], [points.label[i] for i in chosen],
                  source=points.source)


def _remove_unplanned_shards(out: Path, plans: list[SlidePlan]) -> None:
    """Drop shards of this run's slides that the current plan no longer has (e.g. after a region change)."""
    import shutil

    planned = {job.shard for plan in plans for job in plan.jobs}
    prefixes = {job.shard.rsplit(".", 1)[0] + "." for plan in plans for job in plan.jobs}
    for shard in (out / "shards").iterdir():
        if shard.name not in planned and any(shard.name.startswith(p) for p in prefixes):
            shutil.rmtree(shard)


def _run_jobs(jobs: list[ChunkJob], workers: int, executor: Executor | None, progress: bool,
              total_slides: int) -> None:
    """Run chunk jobs inline, on a local process pool, or on a given executor, with a progress bar."""
    from tqdm.auto import tqdm

    total = sum(len(job.regions) for job in jobs)
    bar = tqdm(total=total, unit="region", desc="tiling", disable=not progress, dynamic_ncols=True)
    remaining = {}
    for job in jobs:
        remaining[job.slide_path] = remaining.get(job.slide_path, 0) + 1
    done_slides = total_slides - len(remaining)
    patches = 0

    def finished(job: ChunkJob, count: int) -> None:
        nonlocal done_slides, patches
        patches += count
        remaining[job.slide_path] -= 1
        done_slides += remaining[job.slide_path] == 0
        bar.update(len(job.regions))
        bar.set_postfix(slides=f"{done_slides}/{total_slides}", patches=patches)

    try:
        if executor is None and workers == 1:
            for job in jobs:
                finished(job, run_chunk(job))
        else:
            own = executor is None
            pool = executor or ProcessPoolExecutor(max_workers=workers)
            try:
                futures = {pool.submit(run_chunk, job): job for job in jobs}
                for future in as_completed(futures):
                    finished(futures[future], future.result())
            finally:
                if own:
                    pool.shutdown(cancel_futures=True)
    finally:
        bar.close()


def run_chunk(job: ChunkJob) -> int:
    """Read a chunk's regions, cut its patches and write its shard; returns the number of patches."""
    from .nuclei import FEATURE_NAMES

    images: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with Slide(job.slide_path, mpp=job.slide_mpp) as slide:
        slide.set_cache_bytes(job.cache_bytes)
        for region in job.regions:
            region_images, region_rows = _cut_region(slide, job, region)
            images.extend(region_images)
            rows.extend(region_rows)
    size = job.patch_size
    stack = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    for row in rows:
        for name, value in zip(FEATURE_NAMES, row.pop("_features")):
            row[name] = round(float(value), 4) if np.isfinite(value) else ""
    write_shard(Path(job.store), job.shard, stack, rows, job.input_key, size,
                meta={"slide": Path(job.slide_path).name, "regions": len(job.regions), "pid": os.getpid(),
                      "seconds": round(time.perf_counter() - started, 3)})
    return len(rows)


def _cut_region(slide: Slide, job: ChunkJob, region: Region) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Patches and manifest rows of one region core, read once with its halo and resampled to target µm/px."""
    from .nuclei import detect_nuclei
    from .tissue import in_mask

    plan, halo, size = job.plan, job.halo, job.patch_size
    origin_x, origin_y = region.x - halo, region.y - halo
    rgb = slide.read_region(plan.level, origin_x, origin_y, region.width + 2 * halo, region.height + 2 * halo)
    if plan.scale != 1.0:
        rgb = resample(rgb, plan.scale)
    nuclei = detect_nuclei(rgb, mpp=job.target_mpp)
    # detections in read-level pixels
    det_x = origin_x + nuclei.x / plan.scale
    det_y = origin_y + nuclei.y / plan.scale
    if job.points is not None:
        centre_x = np.asarray(job.points.x, dtype=float) / plan.downsample
        centre_y = np.asarray(job.points.y, dtype=float) / plan.downsample
        labels = np.asarray(job.points.label, dtype=object)
        features = _nearest_features(centre_x, centre_y, det_x, det_y, nuclei.features,
                                     FEATURE_MATCH_UM / (plan.level_mpp))
    else:
        to_thumb = plan.downsample * job.tissue_scale
        on_tissue = in_mask(job.tissue, det_x * to_thumb, det_y * to_thumb)
        centre_x, centre_y, features = det_x[on_tissue], det_y[on_tissue], nuclei.features[on_tissue]
        labels = np.full(len(centre_x), job.slide_label, dtype=object)
    core = ((centre_x >= region.x) & (centre_x < region.x + region.width)
            & (centre_y >= region.y) & (centre_y < region.y + region.height))
    images, rows = [], []
    half = size // 2
    for index in np.flatnonzero(core):
        col = int(round((centre_x[index] - origin_x) * plan.scale)) - half
        row = int(round((centre_y[index] - origin_y) * plan.scale)) - half
        images.append(_crop(rgb, row, col, size))
        rows.append({"slide": slide.name, "x": round(float(centre_x[index] * plan.downsample), 2),
                     "y": round(float(centre_y[index] * plan.downsample), 2), "label": labels[index],
                     "_features": features[index]})
    return images, rows


def _crop(rgb: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    """A size x size crop at (row, col), padded with white where it leaves the array."""
    height, width = rgb.shape[:2]
    if 0 <= row and 0 <= col and row + size <= height and col + size <= width:
        return rgb[row:row + size, col:col + size].copy()
    patch = np.full((size, size, 3), 255, dtype=np.uint8)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + size, height), min(col + size, width)
    if r1 > r0 and c1 > c0:
        patch[r0 - row:r1 - row, c0 - col:c1 - col] = rgb[r0:r1, c0:c1]
    return patch


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


def resample(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Resize an RGB array by ``scale`` with antialiasing (Lanczos)."""
    from PIL import Image

    height, width = rgb.shape[:2]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def _assign_clusters(writer: StoreWriter, config: TileConfig) -> None:
    """Label every patch by k-means over its nucleus features, then rewrite the manifests."""
    store = PatchStore(writer.path, require_complete=False)
    if len(store) < config.clusters:
        raise StoreError(writer.path, f"{len(store)} nuclei cannot form {config.clusters} clusters")
    assignment, model = cluster_features(store.features(), config.clusters, config.seed)
    names = np.asarray(cluster_names(config.clusters) + [UNLABELLED], dtype=object)
    writer.relabel(list(names[assignment]))
    writer.header.provenance["clusters"] = model


def write_qc_picture(path: Path, plan: SlidePlan, store: PatchStore) -> None:
    """The slide overview with its tissue outline (green) and patch centres coloured by class."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    picture = plan.thumbnail.copy()
    outline = find_boundaries(plan.tissue, mode="inner")
    picture[outline] = (0, 200, 0)
    rows = store.slides == plan.name
    x = np.asarray(store.manifest["x"][rows], dtype=float) * plan.tissue_scale
    y = np.asarray(store.manifest["y"][rows], dtype=float) * plan.tissue_scale
    palette = np.array([(230, 25, 75), (0, 130, 200), (255, 180, 0), (145, 30, 180), (70, 240, 240),
                        (240, 50, 230), (0, 0, 0), (128, 128, 0)], dtype=np.uint8)
    colours = palette[np.maximum(store.labels[rows], 0) % len(palette)]
    colours[store.labels[rows] < 0] = (20, 20, 20)
    height, width = picture.shape[:2]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            col = np.clip(np.round(x).astype(int) + dx, 0, width - 1)
            row = np.clip(np.round(y).astype(int) + dy, 0, height - 1)
            picture[row, col] = colours
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
