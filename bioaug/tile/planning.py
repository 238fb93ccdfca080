"""Preflight and planning: open every slide in the calling process and cut it into chunk jobs for workers.

Bad input fails here with a one-line error, before anything is written. A slide is covered by a grid of
tile-aligned regions (read once each, with a halo so that patches near a region's edge are whole); regions
without tissue (or, with annotated points, without points) are dropped, and the rest are grouped into chunk
jobs, one store shard each. The grid and the grouping depend only on the slide and the options, never on the
number of workers, so any executor gives the same store.

Coordinates: a region is read at the pyramid level nearest the target resolution (never coarser), then
resampled by ``ReadPlan.scale`` to the target µm/px. Manifest ``x``/``y`` are nucleus centres in level-0
pixels; a patch's centre pixel is at index ``patch_size // 2``.
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SlideError
from ..provenance import sha256_file, sha256_json
from ..slides import ReadPlan, Slide, expand_slide_paths, resample
from ..tissue import TissueMasker, mask_fraction, tissue_mask
from .config import TileConfig
from .labels import Points
from .sources import LabelSource, SlideLabels

log = logging.getLogger("bioaug")

#: Most region rows in one chunk: neighbouring rows share halos that OpenSlide's cache then decodes once.
CHUNK_ROWS = 2
#: A slide splits into at least this many chunks where it has that many regions, so that a few workers
#: share even a small slide (the Aperio example was one chunk, and two workers ran no faster than one).
MIN_CHUNKS_PER_SLIDE = 8
#: Regions shrink on small slides towards this edge (target px) to give them enough chunks; smaller regions
#: would spend more of their time on the halo.
MIN_REGION_SIZE = 1024
#: Context around a region core for detection, in µm, beyond the patch radius.
DETECTION_CONTEXT_UM = 8.0
#: Tissue masks are widened by this much so nuclei on thin tissue edges are kept.
TISSUE_MARGIN_UM = 20.0
THUMBNAIL_SIDE = 2048
#: Working memory per pixel of a region at the target resolution: the RGB read, its resampled copy and the
#: detector's float maps. An estimate, measured on the 2048 px default (about 0.9 GB per worker).
BYTES_PER_REGION_PIXEL = 150


@dataclass(frozen=True)
class Region:
    """A region core in read-level pixels."""

    x: int
    y: int
    width: int
    height: int


@dataclass
class ChunkJob:
    """Everything a worker needs to turn some regions of one slide into one shard (picklable).

    Its ``input_key`` is derived from the other fields by :func:`chunk_input_key`, so a new field is part of
    the key unless it is named in ``NOT_IN_INPUT_KEY``.
    """

    store: str
    shard: str
    slide_path: str
    slide_mpp: float | None
    plan: ReadPlan
    level_size: tuple[int, int]
    regions: list[Region]
    halo: int
    patch_size: int
    target_mpp: float
    border: str
    max_padded: float
    tissue: np.ndarray
    tissue_scale: float
    tissue_mm2: float
    cache_bytes: int
    points: Points | None = None
    slide_label: str = ""
    stain_reference: float | None = None
    """The slide's haematoxylin reference level (``nuclei.hematoxylin_reference``): detection thresholds are
    relative to it, so a weakly stained slide's nuclei are still found. None: the detector's absolute scale."""
    input_key: str = ""
    """What the shard is made from (:func:`chunk_input_key`): a rerun skips a shard written with the same key."""


#: ``ChunkJob`` fields left out of its input key: where the shard goes (``store``, ``shard``) and the key
#: itself; what the slide's content hash (in the key) stands for, so that a moved or copied slide keeps its
#: shards (its path, the level size, and the tissue mask with its scale and area, made from the slide's overview;
#: a rerun with another tissue masker keeps the shards whose regions did not change); and the cache size, which
#: changes speed, not output.
NOT_IN_INPUT_KEY = frozenset({"store", "shard", "input_key", "slide_path", "level_size", "tissue", "tissue_scale",
                              "tissue_mm2", "cache_bytes"})


def chunk_input_key(job: ChunkJob, slide_sha256: str) -> str:
    """The input key of a chunk: its slide's content hash, the detector's parameters and every ``ChunkJob``
    field but those in ``NOT_IN_INPUT_KEY`` (nested dataclasses as dicts)."""
    from ..nuclei import DetectionParams

    def plain(value: Any) -> Any:
        if is_dataclass(value):
            return asdict(value)
        return [plain(item) for item in value] if isinstance(value, (list, tuple)) else value

    inputs = {f.name: plain(getattr(job, f.name)) for f in fields(job) if f.name not in NOT_IN_INPUT_KEY}
    return sha256_json({"slide": slide_sha256, "detection": asdict(DetectionParams()), **inputs})


@dataclass
class SlidePlan:
    """One slide's preflight result: its read plan, tissue mask and chunk jobs."""

    path: Path
    name: str
    sha256: str
    mpp: float
    dimensions: tuple[int, int]
    thumbnail: np.ndarray
    tissue: np.ndarray
    tissue_scale: float
    jobs: list[ChunkJob] = field(default_factory=list)

    @property
    def tissue_mm2(self) -> float:
        """Tissue area of the planned regions, in mm² (the denominator of the nucleus density)."""
        return sum(job.tissue_mm2 for job in self.jobs)


def preflight(slides: Sequence[str | Path], out: Path, config: TileConfig, source: LabelSource,
              masker: TissueMasker = tissue_mask, memory_per_worker: float | None = None,
              stored_slides: Sequence[str] = ()) -> tuple[list[SlidePlan], list[str]]:
    """Open every slide, ask the label source about it and plan its chunks; returns plans and class names.

    ``stored_slides`` are the names of the slides already in the store ``out``, which no new slide may share
    shard names with."""
    paths = expand_slide_paths(list(slides))
    check_shard_names(paths, stored_slides, out)
    source.check_slides(paths)
    plans, given, upsampled = [], [], []
    for path in paths:
        with Slide(path, mpp=config.slide_mpp) as slide:
            labels = source.for_slide(slide)
            given.append(labels)
            read = slide.plan_for(config.mpp)
            if read.scale > 1:
                upsampled.append((slide.path, read))
            plans.append(plan_slide(slide, out, config, labels, masker, memory_per_worker))
    _warn_upsampled(upsampled, config.mpp)
    source.report()
    class_names = source.class_names(given)
    _warn_case_twins(class_names, config.labels)
    return plans, class_names


#: Slides named in the one warning line about upsampled slides (CRCHistoPhenotypes has 100).
NAMED_IN_A_WARNING = 3


def _warn_upsampled(upsampled: list[tuple[Path, ReadPlan]], mpp: float) -> None:
    """One warning line for every slide coarser than ``mpp``: the slide and its factor, or the count and the
    first few."""
    if len(upsampled) == 1:
        path, read = upsampled[0]
        log.warning("%s: its finest level is %.3g µm/px, coarser than --mpp %g: patches are upsampled %.2fx",
                    path, read.level_mpp, mpp, read.scale)
    elif upsampled:
        named = ", ".join(f"{path.name} ({read.scale:.2f}x)" for path, read in upsampled[:NAMED_IN_A_WARNING])
        log.warning("%d slides are coarser than --mpp %g, so their patches are upsampled: %s%s", len(upsampled),
                    mpp, named, " ..." if len(upsampled) > NAMED_IN_A_WARNING else "")


def _warn_case_twins(class_names: Sequence[str], label_files: Sequence[str]) -> None:
    """Warn about class names that differ only by case (``Lymphocyte``, ``lymphocyte``): they stay two
    classes, which is rarely what the annotator meant."""
    groups: dict[str, list[str]] = {}
    for name in class_names:
        groups.setdefault(name.casefold(), []).append(name)
    for group in (g for g in groups.values() if len(g) > 1):
        log.warning("%s: class names %s differ only by case and stay separate classes; write them alike if "
                    "they are one", ", ".join(label_files) or "labels", " and ".join(map(repr, group)))


def plan_slide(slide: Slide, out: Path, config: TileConfig, labels: SlideLabels,
               masker: TissueMasker = tissue_mask, memory_per_worker: float | None = None) -> SlidePlan:
    """Tissue mask, tile-aligned region grid and chunk jobs of one slide."""
    from scipy import ndimage as ndi

    points = labels.points
    thumbnail, thumb_scale = slide.thumbnail(THUMBNAIL_SIDE)
    tissue = _checked_mask(masker(thumbnail), thumbnail, slide.path)
    margin = int(math.ceil(TISSUE_MARGIN_UM / slide.mpp * thumb_scale))
    widened = ndi.binary_dilation(tissue, iterations=margin) if margin and tissue.any() else tissue
    plan = slide.plan_for(config.mpp)
    level_width, level_height = slide.level_dimensions[plan.level]
    _check_patch_fits(slide, config, plan, (level_width, level_height))
    core = _region_edge(slide, config, plan, (level_width, level_height))
    radius_target = config.patch_size / 2 + DETECTION_CONTEXT_UM / config.mpp
    halo = int(math.ceil(radius_target / plan.scale)) + 2
    _check_memory(slide, config, plan, core, halo, memory_per_worker)
    to_thumb = plan.downsample * thumb_scale
    regions, tissue_mm2, columns = [], [], math.ceil(level_width / core)
    for y in range(0, level_height, core):
        for x in range(0, level_width, core):
            region = Region(x, y, min(core, level_width - x), min(core, level_height - y))
            box = (x * to_thumb, y * to_thumb, (x + region.width) * to_thumb, (y + region.height) * to_thumb)
            fraction = mask_fraction(widened, box)
            has_points = points is not None and _points_in(points, region, plan.downsample).any()
            if has_points or (points is None and tissue.any() and mask_fraction(tissue, box) >= config.min_tissue):
                regions.append(region)
                tissue_mm2.append(fraction * region.width * region.height * plan.level_mpp ** 2 / 1e6)
    stain_reference = slide_stain_reference(slide, plan, regions, tissue_mm2, tissue, to_thumb)
    slide_hash = sha256_file(slide.path)
    stem = shard_stem(slide.name)
    per_chunk = max(1, min(CHUNK_ROWS * columns, math.ceil(len(regions) / MIN_CHUNKS_PER_SLIDE)))
    jobs = []
    for index, start in enumerate(range(0, len(regions), per_chunk)):
        chunk = regions[start:start + per_chunk]
        chunk_points = _subset_points(points, chunk, plan.downsample) if points is not None else None
        job = ChunkJob(store=str(out), shard=f"{stem}.{index:04d}", slide_path=str(slide.path),
                       slide_mpp=slide.mpp, plan=plan, level_size=(level_width, level_height), regions=chunk,
                       halo=halo, patch_size=config.patch_size, target_mpp=config.mpp, border=config.border,
                       max_padded=config.max_padded, tissue=widened, tissue_scale=thumb_scale,
                       tissue_mm2=sum(tissue_mm2[start:start + per_chunk]),
                       cache_bytes=config.cache_mb << 20, points=chunk_points, slide_label=labels.label,
                       stain_reference=stain_reference)
        job.input_key = chunk_input_key(job, slide_hash)
        jobs.append(job)
    return SlidePlan(path=slide.path, name=slide.name, sha256=slide_hash, mpp=slide.mpp,
                     dimensions=slide.dimensions, thumbnail=thumbnail, tissue=tissue, tissue_scale=thumb_scale,
                     jobs=jobs)


#: Regions (those with the most tissue) sampled at detection resolution for a slide's haematoxylin reference.
STAIN_REFERENCE_REGIONS = 4
#: Side of the window read from each of them, in target pixels: enough nuclei for a stable 99th percentile
#: (about a million pixels each), without reading whole regions twice on slides with few regions.
STAIN_REFERENCE_WINDOW = 1024


def slide_stain_reference(slide: Slide, plan: ReadPlan, regions: Sequence[Region], tissue_mm2: Sequence[float],
                          tissue: np.ndarray, to_thumb: float) -> float | None:
    """The slide's haematoxylin reference, from windows of its most tissue-rich regions read as detection sees
    them.

    Measured at detection resolution, not on the overview, where nuclei blur into stroma and the percentile
    drops; one value per slide, so every chunk (and every worker) detects on the same scale. Each window is the
    part of its region with the most tissue on the overview mask ``tissue`` (``to_thumb``: overview px per
    read-level px); a region smaller than a window is read whole.
    """
    from ..nuclei import hematoxylin_reference

    best = sorted(range(len(regions)), key=lambda i: -tissue_mm2[i])[:STAIN_REFERENCE_REGIONS]
    if not best:
        return None
    edge = max(1, int(round(STAIN_REFERENCE_WINDOW / plan.scale)))
    images = []
    for index in best:
        x, y, width, height = _tissue_window(regions[index], edge, tissue, to_thumb)
        image = slide.read_region(plan.level, x, y, width, height)
        images.append(resample(image, plan.scale) if plan.scale != 1.0 else image)
    reference = hematoxylin_reference(images)
    return float(reference) if math.isfinite(reference) else None


def _tissue_window(region: Region, edge: int, tissue: np.ndarray, to_thumb: float) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the ``edge``-sided window of ``region`` with the most tissue, among windows
    half an edge apart (the first of equals)."""
    width, height = min(edge, region.width), min(edge, region.height)
    candidates = [(region.x + dx, region.y + dy)
                  for dy in range(0, region.height - height + 1, max(1, height // 2))
                  for dx in range(0, region.width - width + 1, max(1, width // 2))]
    x, y = max(candidates, key=lambda xy: mask_fraction(tissue, (xy[0] * to_thumb, xy[1] * to_thumb,
                                                                 (xy[0] + width) * to_thumb,
                                                                 (xy[1] + height) * to_thumb)))
    return x, y, width, height


def shard_stem(slide_name: str) -> str:
    """The prefix of a slide's shard names: its file name with characters unsafe in paths replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", slide_name)


def check_shard_names(paths: Sequence[Path], stored_slides: Sequence[str], out: Path) -> None:
    """Raise ``SlideError`` for a slide whose shard names would be another slide's, in this run or in the store.

    Names that differ only in characters unsafe in paths (``case 1.tiff`` and ``case_1.tiff``, or two CJK names
    of one length) give the same shard names, and the second slide's shards would silently replace the first's.
    """
    owners: dict[str, str] = {shard_stem(name): f"slide {name!r} already in {out}" for name in stored_slides}
    names = {shard_stem(name): name for name in stored_slides}
    for path in paths:
        stem = shard_stem(path.name)
        if stem in owners and names[stem] != path.name:
            raise SlideError(path, f"its name and that of {owners[stem]} give the same shard names ({stem}.*) "
                                   f"once characters unsafe in paths are replaced; rename one of them")
        owners[stem], names[stem] = str(path), path.name


def _checked_mask(mask: Any, thumbnail: np.ndarray, path: Path) -> np.ndarray:
    """A tissue masker's output as a boolean array of the overview's shape, or a one-line error."""
    mask = np.asarray(mask)
    if mask.shape != thumbnail.shape[:2]:
        raise SlideError(path, f"the tissue masker returned shape {mask.shape} for an overview of "
                               f"{thumbnail.shape[:2]}")
    return mask.astype(bool, copy=False)


def _region_edge(slide: Slide, config: TileConfig, plan: ReadPlan, level_size: tuple[int, int]) -> int:
    """The region core edge in level px: ``--region-size``, smaller on a slide too small for
    ``MIN_CHUNKS_PER_SLIDE`` regions (not below ``MIN_REGION_SIZE``), aligned to the slide's tiles."""
    width_t, height_t = level_size[0] * plan.scale, level_size[1] * plan.scale
    enough = math.sqrt(width_t * height_t / MIN_CHUNKS_PER_SLIDE)
    edge_target = min(config.region_size, max(MIN_REGION_SIZE, 4 * config.patch_size, enough))
    tile_edge = max(1, int(round(slide.tile_size)))
    return max(tile_edge, int(round(edge_target / plan.scale / tile_edge)) * tile_edge)


def _check_patch_fits(slide: Slide, config: TileConfig, plan: ReadPlan, level_size: tuple[int, int]) -> None:
    """Refuse a patch larger than the slide itself at the target resolution."""
    width_t, height_t = (int(round(side * plan.scale)) for side in level_size)
    if config.patch_size > max(width_t, height_t):
        raise SlideError(slide.path, f"--patch-size {config.patch_size} is larger than the slide at "
                                     f"{config.mpp:g} µm/px ({width_t} x {height_t} px)")


def physical_memory() -> float:
    """This machine's physical memory in bytes."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _check_memory(slide: Slide, config: TileConfig, plan: ReadPlan, core: int, halo: int,
                  memory_per_worker: float | None) -> None:
    """Refuse regions whose reading and detection would not fit a worker's memory, before any read."""
    read_edge = core + 2 * halo
    need = read_edge ** 2 * 3 + (read_edge * max(plan.scale, 1.0)) ** 2 * BYTES_PER_REGION_PIXEL
    budget = memory_per_worker or physical_memory() / config.workers
    if need > budget:
        raise SlideError(slide.path, f"regions of {read_edge} x {read_edge} px at level {plan.level} need about "
                                     f"{need / 2**30:.1f} GiB per worker, more than the {budget / 2**30:.1f} GiB "
                                     f"available; lower --region-size or --workers")


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


def remove_unplanned_shards(out: Path, plans: list[SlidePlan]) -> None:
    """Drop shards of this run's slides that the current plan no longer has (e.g. after a region change)."""
    planned = {job.shard for plan in plans for job in plan.jobs}
    prefixes = {shard_stem(plan.name) + "." for plan in plans}
    for shard in (out / "shards").iterdir():
        if shard.name not in planned and any(shard.name.startswith(p) and shard.name[len(p):].isdigit()
                                             for p in prefixes):
            shutil.rmtree(shard)
