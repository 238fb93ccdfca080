"""Open a slide through one interface, whatever it is: any format OpenSlide reads, or a plain image.

OpenSlide handles the vendor formats (svs, ndpi, mrxs, scn, pyramidal tiff, ...); plain PNG/JPEG and
non-pyramidal TIFF go through ``openslide.ImageSlide`` so that both expose the same levels and
``read_region``. This module adds what tiling needs on top: the physical resolution (µm/px) with a clear
error when it is unknown, the level to read for a target resolution, RGB arrays composited on white, and an
up-front check that a TIFF-family file is not truncated.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SlideError

#: Suffixes treated as slides when a directory is given.
log = logging.getLogger("bioaug")

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
                  ".dcm", ".png", ".jpg", ".jpeg", ".bmp")
#: Resolutions within this relative tolerance are treated as equal (no resampling).
MPP_TOLERANCE = 0.02


@dataclass(frozen=True)
class ReadPlan:
    """How to obtain pixels at a target resolution: which level to read, and the scale to apply after.

    ``scale`` multiplies level pixels into target pixels (< 1 shrinks); 1.0 means the level already has the
    target resolution within ``MPP_TOLERANCE``.
    """

    level: int
    downsample: float
    level_mpp: float
    scale: float


class Slide:
    """A slide opened for reading, with its resolution resolved.

    Parameters
    ----------
    path
        Slide or image file.
    mpp
        µm/px to use when the file records none (plain images, some TIFFs). A recorded value wins.
    """

    def __init__(self, path: str | Path, *, mpp: float | None = None) -> None:
        import openslide

        self.path = Path(path)
        if not self.path.is_file():
            raise SlideError(self.path, "no such file")
        _check_tiff_complete(self.path)
        try:
            self._slide: openslide.AbstractSlide = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError:
            self._slide = _open_plain_image(self.path)
        except openslide.OpenSlideError as exc:
            raise SlideError(self.path, f"OpenSlide cannot read it ({exc})") from None
        self.mpp = _resolve_mpp(self.path, self._slide.properties, mpp)

    @property
    def name(self) -> str:
        """The file name, used as the slide's identity in manifests and label tables."""
        return self.path.name

    @property
    def dimensions(self) -> tuple[int, int]:
        return self._slide.dimensions

    @property
    def level_count(self) -> int:
        return self._slide.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._slide.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._slide.level_downsamples

    @property
    def tile_size(self) -> int:
        """The stored tile edge at level 0 (regions aligned to it decode each tile once); 256 if unknown."""
        value = self._slide.properties.get("openslide.level[0].tile-width")
        return int(value) if value else 256

    @property
    def vendor(self) -> str:
        return self._slide.properties.get("openslide.vendor", "image")

    def set_cache_bytes(self, capacity: int) -> None:
        """Give this slide its own OpenSlide tile cache, so overlapping reads decode each tile once."""
        import openslide

        if isinstance(self._slide, openslide.OpenSlide):
            self._slide.set_cache(openslide.OpenSlideCache(capacity))

    def plan_for(self, target_mpp: float) -> ReadPlan:
        """The coarsest level whose resolution is at least as fine as ``target_mpp``, and the scale to apply.

        Reading a finer level and shrinking keeps detail; reading a coarser level and enlarging would invent
        it, so it happens only when even level 0 is coarser than the target.
        """
        best = 0
        for level, downsample in enumerate(self.level_downsamples):
            if self.mpp * downsample <= target_mpp * (1 + MPP_TOLERANCE):
                best = level
        downsample = self.level_downsamples[best]
        level_mpp = self.mpp * downsample
        scale = level_mpp / target_mpp
        if abs(scale - 1.0) <= MPP_TOLERANCE:
            scale = 1.0
        return ReadPlan(level=best, downsample=downsample, level_mpp=level_mpp, scale=scale)

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) of ``level`` at level-pixel origin (x, y); outside the slide is white."""
        import openslide

        downsample = self.level_downsamples[level]
        location = (int(round(x * downsample)), int(round(y * downsample)))
        try:
            rgba = np.asarray(self._slide.read_region(location, level, (int(width), int(height))))
        except openslide.OpenSlideError as exc:
            raise SlideError(self.path, f"read failed at level {level} ({x}, {y}): {exc}") from None
        return rgba_on_white(rgba)

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        """An RGB overview no larger than ``max_side`` and its size relative to level 0 (thumb px / level-0 px)."""
        width, height = self.dimensions
        factor = min(1.0, max_side / max(width, height))
        size = (max(1, int(round(width * factor))), max(1, int(round(height * factor))))
        try:
            image = self._slide.get_thumbnail(size)
        except Exception as exc:  # OpenSlide and PIL raise several types for damaged files
            raise SlideError(self.path, f"cannot read an overview ({exc})") from None
        rgb = np.asarray(image.convert("RGB"))
        return rgb, rgb.shape[1] / width

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(path: str | Path, *, mpp: float | None = None) -> Slide:
    """Open ``path`` as a :class:`Slide` (OpenSlide formats and plain images alike)."""
    return Slide(path, mpp=mpp)


def rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite OpenSlide's premultiplied-free RGBA output on white, as a glass slide's background."""
    if rgba.shape[-1] == 3:
        return rgba
    alpha = rgba[..., 3:4].astype(np.uint16)
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    rgb = (rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha)) // 255
    return rgb.astype(np.uint8)


def expand_slide_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, and the slide files inside any directory given, sorted; errors for missing paths."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            inside = sorted(p for p in item.iterdir() if p.suffix.lower() in SLIDE_SUFFIXES and p.is_file())
            if not inside:
                raise SlideError(item, f"directory holds no slide files ({', '.join(SLIDE_SUFFIXES)})")
            found.extend(inside)
        elif item.exists():
            found.append(item)
        else:
            raise SlideError(item, "no such file")
    names = [p.name for p in found]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SlideError(duplicate, "two input slides share this file name; slide names must be unique")
    return found


def _open_plain_image(path: Path):
    """Plain images through openslide.ImageSlide (PIL), with a clear error for anything else."""
    import openslide
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as probe:
            probe.verify()
        return openslide.ImageSlide(str(path))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not a slide or image that OpenSlide or PIL can read"
        if isinstance(exc, Image.DecompressionBombError):
            reason = "plain image too large to decode whole; convert it to a pyramidal TIFF"
        raise SlideError(path, reason) from None


def _resolve_mpp(path: Path, properties: dict, given: float | None) -> float:
    """µm/px from the slide's properties, else the user's value, else a clear error."""
    values = [properties.get("openslide.mpp-x"), properties.get("openslide.mpp-y")]
    try:
        recorded = [float(v) for v in values if v]
    except ValueError:
        recorded = []
    if recorded and all(math.isfinite(v) and v > 0 for v in recorded):
        mpp = float(np.mean(recorded))
        if given and abs(given - mpp) / mpp > MPP_TOLERANCE:
            log.warning("%s: slide records %g µm/px; ignoring the given %g", path, mpp, given)
        return mpp
    if given:
        if not (math.isfinite(given) and given > 0):
            raise SlideError(path, f"µm/px must be positive, got {given}")
        return float(given)
    raise SlideError(path, "no µm/px in the slide's properties; pass it with --slide-mpp")


def _check_tiff_complete(path: Path) -> None:
    """Refuse a TIFF-family file whose image data points past the end of the file (a truncated copy)."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] not in (b"II", b"MM"):
        return
    import tifffile

    size = os.path.getsize(path)
    try:
        with tifffile.TiffFile(path) as tiff:
            for page in tiff.pages:
                offsets, counts = page.dataoffsets, page.databytecounts
                if offsets and max(o + c for o, c in zip(offsets, counts)) > size:
                    raise SlideError(path, f"truncated: image data runs past the end of the file ({size} bytes)")
    except SlideError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged headers
        raise SlideError(path, f"damaged TIFF structure ({exc.__class__.__name__}: {exc})") from None
