"""Options of ``bioaug tile`` and the limits they are checked against before any slide is read."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import option
from ..errors import ConfigError
from .sources import LABEL_SOURCE_TYPES

LABEL_SOURCES = tuple(LABEL_SOURCE_TYPES)
BORDER_MODES = ("skip", "reflect", "constant")
#: A patch is nucleus-centred: beyond this edge it is a region, not a patch (and a 100000 px patch a typo).
MAX_PATCH_SIZE = 1024
#: Regions are read, resampled and searched for nuclei whole; the detector needs tens of bytes per pixel.
MAX_REGION_SIZE = 8192
#: Options that say how a run is executed, not what it produces: they may differ between runs into one store.
RUN_ONLY_FIELDS = ("workers", "scheduler", "cache_mb", "qc", "labels", "replace_slides")


@dataclass
class TileConfig:
    """Options of ``bioaug tile``; every field is also a ``--flag`` and a config-file key."""

    patch_size: int = option(32, f"patch edge in pixels at the target resolution (8 to {MAX_PATCH_SIZE})")
    mpp: float = option(0.5, "target resolution in µm/px; patches are resampled to it")
    slide_mpp: float | None = option(None, "µm/px for slides whose file records none (plain images, re-saved "
                                           "TIFF/SVS); a recorded value wins")
    label_by: str = option("none", "label source", choices=LABEL_SOURCES)
    labels: list[str] = option([], "label files: point CSV (slide,x,y,label) or GeoJSON for 'points'; "
                                   "a slide,label CSV for 'slide'")
    clusters: int = option(4, "number of morphology clusters for --label-by cluster")
    border: str = option("skip", "patches reaching past the slide's edge: skip those with more than "
                                 "--max-padded of their area outside (the rest mirror-padded), reflect "
                                 "(mirror padding) or constant (white)", choices=BORDER_MODES)
    max_padded: float = option(0.1, "with --border skip: largest fraction of a patch that may lie outside the "
                                    "slide")
    workers: int = option(1, "worker processes (ignored with --scheduler)")
    scheduler: str | None = option(None, "run chunks on Dask: a dask.distributed scheduler address "
                                         "(tcp://host:8786), or local:N for a local cluster of N worker processes")
    region_size: int = option(2048, f"edge of the regions read at once, in target pixels (at most "
                                    f"{MAX_REGION_SIZE})")
    min_tissue: float = option(0.01, "skip regions whose tissue fraction is below this")
    cache_mb: int = option(256, "OpenSlide tile cache per worker, in MiB")
    seed: int = option(0, "seed for clustering")
    qc: bool = option(True, "write a QC picture per slide")
    replace_slides: bool = option(False, "let a slide replace the patches of a different slide of the same file "
                                         "name already in the store (a re-scan); without it that is refused")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first option out of range."""
        finite = all(math.isfinite(v) for v in (self.mpp, self.min_tissue, self.max_padded,
                                                self.slide_mpp if self.slide_mpp is not None else 1.0))
        checks = [
            (finite, "mpp", "--mpp, --slide-mpp, --min-tissue and --max-padded must be finite numbers"),
            (8 <= self.patch_size <= MAX_PATCH_SIZE, "patch_size", f"must be within [8, {MAX_PATCH_SIZE}]"),
            (self.mpp > 0, "mpp", "must be positive"),
            (self.slide_mpp is None or self.slide_mpp > 0, "slide_mpp", "must be positive"),
            (self.workers >= 1, "workers", "must be at least 1"),
            (self.region_size <= MAX_REGION_SIZE, "region_size", f"must be at most {MAX_REGION_SIZE}"),
            (self.region_size >= 4 * self.patch_size, "region_size", "must be at least 4 x patch_size"),
            (0 <= self.min_tissue <= 1, "min_tissue", "must be within [0, 1]"),
            (0 <= self.max_padded < 1, "max_padded", "must be within [0, 1)"),
            (self.clusters >= 2, "clusters", "must be at least 2"),
            (self.label_by in LABEL_SOURCES, "label_by", f"must be one of {', '.join(LABEL_SOURCES)}"),
            (self.border in BORDER_MODES, "border", f"must be one of {', '.join(BORDER_MODES)}"),
            (self.scheduler is None or bool(self.scheduler.strip()), "scheduler", "must not be empty"),
            (self.label_by not in LABEL_SOURCES or not LABEL_SOURCE_TYPES[self.label_by].needs_files
             or bool(self.labels), "labels",
             f"--label-by {self.label_by} needs --labels FILE"),
        ]
        for ok, name, problem in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')}", problem)
