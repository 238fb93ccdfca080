"""Label sources: where a tiling run's patch labels come from, each a small object behind one interface.

A source is asked three things, in the calling process, before and after the chunks run: what it gives each
slide (:meth:`LabelSource.for_slide`: annotated points to centre patches on, or one label for every detected
nucleus), the class names of the store (:meth:`LabelSource.class_names`), and whether it has work once every
shard exists (:meth:`LabelSource.finish`, which morphology clusters need). Workers never see the source, only
the points or label it gave their slide. Sources are registered by their ``--label-by`` name::

    @register_label_source
    class MySource(LabelSource):
        name = "mine"
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np

from ..errors import LabelError, StoreError
from ..provenance import sha256_file
from ..registry import Registry
from ..store import UNLABELLED, PatchStore, StoreWriter
from .labels import (Points, cluster_features, cluster_names, lookup, read_points, read_slide_labels,
                     slide_key)

if TYPE_CHECKING:
    from ..slides import Slide
    from .config import TileConfig

log = logging.getLogger("bioaug")

#: Label files are recorded among a store's inputs under this prefix, beside the slides' names.
LABEL_INPUT_PREFIX = "labels:"


@dataclass
class SlideLabels:
    """What a label source gives one slide: points to centre patches on (level-0 px), or a label for every
    detected nucleus (``points`` is None)."""

    points: Points | None = None
    label: str = UNLABELLED


class LabelSource:
    """Base of every label source; the defaults describe unlabelled, detection-centred patches."""

    name: ClassVar[str] = ""
    #: How a run with no region to tile says why, before "the slide(s)".
    nothing_to_tile: ClassVar[str] = "no tissue found in"
    #: Whether the source reads ``--labels`` files.
    needs_files: ClassVar[bool] = False

    def __init__(self, config: "TileConfig") -> None:
        self.config = config

    def inputs(self) -> dict[str, str]:
        """Hashes of the label files, recorded in the store's provenance."""
        return {f"{LABEL_INPUT_PREFIX}{Path(p).name}": sha256_file(p) for p in self.config.labels
                if Path(p).is_file()}

    def check_slides(self, paths: Sequence[Path]) -> None:
        """Called once with every input slide (e.g. to warn about table rows that match none)."""

    def for_slide(self, slide: "Slide") -> SlideLabels:
        """The points or the label of one opened slide; raises ``LabelError`` where the source has none."""
        return SlideLabels()

    def class_names(self, slides: Sequence[SlideLabels]) -> list[str]:
        """The store's class names, given what :meth:`for_slide` returned for every slide."""
        return []

    def report(self) -> None:
        """Log what was used of the label files, once every slide has been asked about."""

    def finish(self, writer: StoreWriter) -> None:
        """Work left once every shard is written (before the store is sealed)."""


LABEL_SOURCE_TYPES: Registry[type[LabelSource]] = Registry("label source",
                                                             lambda message: LabelError("--label-by", message))


def register_label_source(cls: type[LabelSource]) -> type[LabelSource]:
    """Class decorator: make ``cls`` available as ``--label-by cls.name``."""
    return LABEL_SOURCE_TYPES.register(cls.name, cls)


def make_label_source(config: "TileConfig") -> LabelSource:
    """The registered source named by ``config.label_by``."""
    return LABEL_SOURCE_TYPES.require(config.label_by)(config)


def _warn_unmatched(source: str, table: dict[str, object], paths: Sequence[Path]) -> None:
    names = {p.name for p in paths} | {p.stem for p in paths}
    unknown = sorted(key for key in table if key not in names)
    if unknown:
        log.warning("%s: %d labelled slides are not among the inputs (e.g. %s)", source, len(unknown), unknown[0])


@register_label_source
class NoLabels(LabelSource):
    """Every detected nucleus on tissue, unlabelled."""

    name = "none"


@register_label_source
class PointLabels(LabelSource):
    """Annotated nucleus centres (CSV or GeoJSON) with their classes; patches are centred on the points."""

    name = "points"
    nothing_to_tile = "no annotated points fall on"
    needs_files = True

    def __init__(self, config: "TileConfig") -> None:
        super().__init__(config)
        self.table = read_points(config.labels)
        self.used = {source: 0 for parts in self.table.values() for source in (p.source for p in parts)}

    def check_slides(self, paths: Sequence[Path]) -> None:
        _warn_unmatched(", ".join(self.config.labels), self.table, paths)  # type: ignore[arg-type]

    def for_slide(self, slide: "Slide") -> SlideLabels:
        """Every file's points for the slide (by file name and by stem), checked to be nuclei on it."""
        keys = dict.fromkeys((slide_key(slide.name), Path(slide_key(slide.name)).stem))
        found = [points for key in keys for points in self.table.get(key, [])]
        if not found:
            log.warning("%s: no annotated points for this slide; it gives no patches", slide.path)
        merged = Points(source=", ".join(points.source for points in found))
        for points in found:
            _check_nucleus_sized(points, slide)
            inside = points_inside(Path(points.source), slide, points)
            self.used[points.source] += len(inside.x)
            for x, y, label in zip(inside.x, inside.y, inside.label):
                merged.add(x, y, label)
        return SlideLabels(points=merged)

    def report(self) -> None:
        for source, used in self.used.items():
            total = sum(len(points.x) for parts in self.table.values() for points in parts if points.source == source)
            if used == total:
                log.info("%s: all %d points used", source, total)
            else:
                log.info("%s: %d of its %d points used (the others are of slides not in this run)", source, used,
                         total)

    def class_names(self, slides: Sequence[SlideLabels]) -> list[str]:
        return sorted({label for item in slides for label in (item.points.label if item.points else [])})


@register_label_source
class SlideTableLabels(LabelSource):
    """A ``slide,label`` table: every detected nucleus of a slide gets its slide's class."""

    name = "slide"
    needs_files = True

    def __init__(self, config: "TileConfig") -> None:
        super().__init__(config)
        self.table = read_slide_labels(config.labels[0])

    def check_slides(self, paths: Sequence[Path]) -> None:
        _warn_unmatched(self.config.labels[0], self.table, paths)  # type: ignore[arg-type]

    def for_slide(self, slide: "Slide") -> SlideLabels:
        label = lookup(self.table, slide.name)  # type: ignore[arg-type]
        if label is None:
            raise LabelError(self.config.labels[0], f"no label for slide {slide.name}")
        return SlideLabels(label=str(label))

    def class_names(self, slides: Sequence[SlideLabels]) -> list[str]:
        return sorted({item.label for item in slides})


@register_label_source
class ClusterLabels(LabelSource):
    """k-means clusters of nucleus morphology features, assigned once every shard exists."""

    name = "cluster"

    def class_names(self, slides: Sequence[SlideLabels]) -> list[str]:
        return cluster_names(self.config.clusters)

    def finish(self, writer: StoreWriter) -> None:
        store = PatchStore(writer.path, require_complete=False)
        k = self.config.clusters
        if len(store) < k:
            raise StoreError(writer.path, f"{len(store)} nuclei cannot form {k} clusters")
        assignment, model = cluster_features(store.features(), k, self.config.seed)
        names = np.asarray(cluster_names(k) + [UNLABELLED], dtype=object)
        writer.relabel(list(names[assignment]))
        writer.header.provenance["clusters"] = model


#: The largest polygon taken for a nucleus, in µm² (a diameter of about 36 µm; tumour nuclei stay under
#: 500): anything larger is an annotated region, whose centroid is no nucleus.
MAX_NUCLEUS_UM2 = 1000.0


def _check_nucleus_sized(points: Points, slide: "Slide") -> None:
    """Raise ``LabelError`` for polygons too large to be a nucleus (a region such as "Tumor")."""
    areas = np.asarray(points.area, dtype=float) * slide.mpp ** 2
    large = areas > MAX_NUCLEUS_UM2
    if large.any():
        first = int(np.argmax(large))
        raise LabelError(points.source, f"{int(large.sum())} polygons for {slide.name} are larger than a nucleus "
                                        f"(over {MAX_NUCLEUS_UM2:g} µm²), e.g. a {points.label[first]!r} of "
                                        f"{areas[first]:.0f} µm²: regions are not point labels; leave them out")


def points_inside(source: Path, slide: "Slide", points: Points) -> Points:
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

