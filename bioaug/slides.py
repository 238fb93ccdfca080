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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import SlideError

log = logging.getLogger("bioaug")

#: Suffixes treated as slides when a directory is given.
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
            raise SlideError(self.path, why_not_a_file(self.path))
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
    """Composite OpenSlide's (non-premultiplied) RGBA output on white, as a glass slide's background.

    Most pixels are opaque, and those outside the slide fully transparent; only the few partly transparent
    ones (at the edges of some scanners' tiles) need arithmetic, so a region read across the slide's edge costs
    little more than one inside it.
    """
    if rgba.shape[-1] == 3:
        return rgba
    alpha = rgba[..., 3]
    rgb = np.ascontiguousarray(rgba[..., :3])
    if alpha.min() == 255:
        return rgb
    clear = alpha == 0
    rgb[clear] = 255
    partial = ~clear & (alpha < 255)
    if partial.any():
        weight = alpha[partial].astype(np.uint16)[:, None]
        rgb[partial] = ((rgb[partial].astype(np.uint16) * weight + 255 * (255 - weight)) // 255).astype(np.uint8)
    return rgb


def resample(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Resize an RGB array by ``scale`` with antialiasing (Lanczos): a region read at a pyramid level brought to
    the target µm/px (``ReadPlan.scale``)."""
    from PIL import Image

    height, width = rgb.shape[:2]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def expand_slide_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, and the slide files inside any directory given, sorted; errors for missing paths."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            named = sorted(p for p in item.iterdir() if p.suffix.lower() in SLIDE_SUFFIXES)
            for broken in (p for p in named if p.is_symlink() and not p.exists()):
                log.warning("%s: %s; skipped", broken, why_not_a_file(broken))
            inside = [p for p in named if p.is_file()]
            if not inside:
                raise SlideError(item, f"directory holds no slide files ({', '.join(SLIDE_SUFFIXES)})")
            found.extend(inside)
        elif item.exists():
            found.append(item)
        else:
            raise SlideError(item, why_not_a_file(item))
    names = [p.name for p in found]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SlideError(duplicate, "two input slides share this file name; slide names must be unique")
    return found


def why_not_a_file(path: Path) -> str:
    """Why ``path`` is no file to read: missing, a directory, a dangling symbolic link or a loop of them."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except FileNotFoundError:
            return f"dangling symbolic link (to {os.readlink(path)}, which does not exist)"
        except (OSError, RuntimeError):  # ELOOP; Python before 3.13 raises RuntimeError for a loop
            return "symbolic link loop"
    if path.is_dir():
        return "is a directory, but a slide file is needed here"
    return "no such file"


def _open_plain_image(path: Path):
    """Plain images through openslide.ImageSlide (PIL), with a clear error for anything else."""
    import openslide
    from PIL import Image, UnidentifiedImageError

    try:
        with _third_party_quiet(), Image.open(path) as probe:
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
    """Refuse a TIFF-family file (TIFF, BigTIFF, SVS, NDPI, SCN, pyramidal OME-TIFF, ...) that was cut short.

    Formats such as Aperio SVS write each directory after its image data, so a truncated copy does not fail
    to parse: it silently loses its last pages, or every page. Two checks catch that before OpenSlide sees the
    file: every directory, out-of-line tag value and next-directory pointer of the chain (and of SubIFDs) lies
    within the file, and every strip or tile of every page ends within it. Messages from tifffile and PIL
    about the damage are kept off the terminal, so the one error line is all that is printed.
    """
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] not in (b"II", b"MM"):
        return
    import tifffile

    size = os.path.getsize(path)
    truncated = SlideError(path, f"truncated: the file ends at {size} bytes but its TIFF structure points "
                                 f"further (an incomplete copy?)")
    with _third_party_quiet():
        try:
            with tifffile.TiffFile(path) as tiff:
                # NDPI past 4 GiB keeps the high bits of its offsets elsewhere: there tifffile's pages decide
                walkable = not (tiff.is_ndpi and size >= 2 ** 32)
                if walkable and _directory_chain_runs_past(path, size):
                    raise truncated
                pages = [page for series in tiff.series for level in series.levels for page in level.pages]
                for page in [*tiff.pages, *pages]:
                    if page is None or not hasattr(page, "dataoffsets"):
                        continue
                    ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c]
                    if ends and max(ends) > size:
                        raise truncated
                if not len(tiff.pages):
                    raise truncated
        except SlideError:
            raise
        except Exception as exc:  # tifffile raises many types for damaged headers
            if _directory_chain_runs_past(path, size):
                raise truncated from None
            raise SlideError(path, f"damaged TIFF structure ({exc.__class__.__name__}: {exc})") from None


#: Byte sizes of TIFF field types (BYTE, ASCII, SHORT, LONG, RATIONAL, ..., LONG8, SLONG8, IFD8).
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8,
                    17: 8, 18: 8}
_SUBIFDS_TAG = 330


def _directory_chain_runs_past(path: Path, size: int) -> bool:
    """True when a TIFF directory, an out-of-line tag value or a directory pointer lies beyond ``size``.

    Walks the main chain of image file directories and their SubIFDs (classic TIFF and BigTIFF) reading
    only the directories, so it is cheap on multi-GB slides.
    """
    import struct

    with open(path, "rb") as handle:
        def read(offset: int, count: int) -> bytes | None:
            if offset < 0 or offset + count > size:
                return None
            handle.seek(offset)
            return handle.read(count)

        head = read(0, 16) or b""
        if len(head) < 8:
            return True
        order = "<" if head[:2] == b"II" else ">"
        version = struct.unpack(order + "H", head[2:4])[0]
        big = version == 43
        if version not in (42, 43) or (big and len(head) < 16):
            return False  # not a TIFF we know how to walk; tifffile's checks decide
        offset_format, count_format, entry_size = (order + "Q", order + "Q", 20) if big else (order + "I", order + "H", 12)
        pointer = 8 if big else 4
        first = struct.unpack(offset_format, head[8:16] if big else head[4:8])[0]
        pending, seen = [first], set()
        while pending:
            offset = pending.pop()
            if offset == 0 or offset in seen:
                continue
            seen.add(offset)
            raw_count = read(offset, struct.calcsize(count_format))
            if raw_count is None:
                return True
            count = struct.unpack(count_format, raw_count)[0]
            table = read(offset + len(raw_count), count * entry_size + pointer)
            if table is None:
                return True
            for index in range(count):
                entry = table[index * entry_size:(index + 1) * entry_size]
                tag, kind = struct.unpack(order + "HH", entry[:4])
                number = struct.unpack(offset_format if big else order + "I", entry[4:4 + pointer])[0]
                length = _TIFF_TYPE_SIZES.get(kind, 1) * number
                value = entry[4 + pointer:]
                value_offset = struct.unpack(offset_format, value)[0] if length > pointer else None
                if value_offset is not None and value_offset + length > size:
                    return True
                if tag == _SUBIFDS_TAG:
                    raw = read(value_offset, length) if value_offset is not None else value[:length]
                    step = 8 if big or kind in (16, 18) else 4
                    fmt = order + ("Q" if step == 8 else "I")
                    pending.extend(struct.unpack(fmt, raw[i:i + step])[0] for i in range(0, len(raw), step))
            pending.append(struct.unpack(offset_format, table[-pointer:])[0])
    return False


@contextmanager
def _third_party_quiet() -> Iterator[None]:
    """Keep tifffile's log lines and PIL's warnings about a damaged file off the terminal."""
    import warnings

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
