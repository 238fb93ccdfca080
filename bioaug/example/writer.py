"""Writing an example slide: the pyramidal, tiled, JPEG-compressed TIFF and its nucleus CSV."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ConfigError
from ..progress import progress_bar
from ..provenance import atomic_path
from .nuclei import CLASS_NAMES, Nuclei
from .rendering import level_textures, render_tile
from .scene import Scene, build_scene


@dataclass(frozen=True)
class ExampleSlide:
    """An example slide on disk: the pyramidal TIFF, its nucleus CSV and what they hold."""

    path: Path
    nuclei_csv: Path
    width: int
    height: int
    mpp: float
    n_nuclei: int


def write_example_slide(path: str | Path, *, width: int = 4096, height: int = 3072, mpp: float = 0.25,
                        seed: int = 0, tile_size: int = 256, jpeg_quality: int = 90,
                        progress: bool = False, hematoxylin_strength: float = 1.0,
                        eosin_strength: float = 1.0) -> ExampleSlide:
    """Write a procedural H&E-like slide and the CSV of its nuclei (``<stem>.nuclei.csv``, beside it).

    Parameters
    ----------
    path : str or Path
        Where to write the TIFF; the parent directory is created if needed.
    width, height : int
        Level-0 size in pixels (at least 64 each).
    mpp : float
        Level-0 resolution in µm per pixel. Tissue and nuclei have physical sizes, so a slide at 0.5 µm/px
        shows the same tissue as one at 0.25 µm/px with half the pixels.
    seed : int
        Seed of the scene and of every texture: the same arguments give byte-identical files.
    tile_size : int
        TIFF tile side in pixels (a multiple of 16).
    jpeg_quality : int
        JPEG quality of the tiles, 1 to 100.
    progress : bool
        Show a progress bar over the tiles of all levels.
    hematoxylin_strength : float
        Haematoxylin concentration relative to the default stain (0.25: a weakly stained slide, as from an
        exhausted bath or a frozen section), everywhere at once; the nuclei and their CSV are unchanged.
    eosin_strength : float
        Eosin concentration relative to the default, likewise (slides of one cohort vary in both stains).

    Returns
    -------
    ExampleSlide
        Paths, size, µm/px and number of nuclei. The CSV has columns ``slide,x,y,label``: the TIFF's file name,
        the nucleus centre in level-0 pixels (pixel ``i`` is centred on ``i``) and one of ``CLASS_NAMES``.

    Raises
    ------
    ConfigError
        If a size, µm/px, tile size or quality is out of range.

    Examples
    --------
    >>> import tempfile
    >>> slide = write_example_slide(Path(tempfile.mkdtemp()) / "example.tiff", width=1024, height=768)
    >>> slide.nuclei_csv.name, slide.n_nuclei > 0
    ('example.nuclei.csv', True)
    """
    path = Path(path)
    _check_options(width, height, mpp, tile_size, jpeg_quality)
    for name, strength in (("hematoxylin_strength", hematoxylin_strength), ("eosin_strength", eosin_strength)):
        if not 0 < strength <= 4:
            raise ConfigError(name, f"must lie in (0, 4], got {strength}")
    scene = build_scene(width, height, mpp, tile_size, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = path.with_name(f"{path.stem}.nuclei.csv")
    with atomic_path(path) as tmp:
        _write_pyramid(tmp, scene, seed, tile_size, jpeg_quality, progress,
                       (hematoxylin_strength, eosin_strength))
    with atomic_path(csv_path) as tmp:
        _write_nuclei_csv(tmp, scene.nuclei, path.name)
    return ExampleSlide(path=path, nuclei_csv=csv_path, width=width, height=height, mpp=mpp,
                        n_nuclei=len(scene.nuclei.x))


def _check_options(width: int, height: int, mpp: float, tile_size: int, jpeg_quality: int) -> None:
    """Reject options the writer cannot honour, before any work is done."""
    if min(width, height) < 64:
        raise ConfigError("width/height", f"the example slide needs at least 64 x 64 pixels, got {width} x "
                                          f"{height}")
    if not 0.05 <= mpp <= 10:
        raise ConfigError("mpp", f"µm/px must lie between 0.05 and 10, got {mpp}")
    if tile_size < 16 or tile_size % 16:
        raise ConfigError("tile_size", f"TIFF tiles must be a positive multiple of 16 pixels, got {tile_size}")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError("jpeg_quality", f"JPEG quality must lie between 1 and 100, got {jpeg_quality}")


def pyramid_shapes(width: int, height: int) -> list[tuple[int, int]]:
    """(height, width) of each level: downsample 4 per level while the smaller side stays >= 256 pixels.

    A slide with a side of 1024 pixels or more gets at least one reduced level, so small test slides exercise
    multi-level reading too.
    """
    shapes = [(height, width)]
    while True:
        down = 4 ** len(shapes)
        shape = (-(-height // down), -(-width // down))
        if min(shape) < 256 and not (len(shapes) == 1 and max(width, height) >= 1024):
            return shapes
        shapes.append(shape)


def _write_pyramid(path: Path, scene: Scene, seed: int, tile: int, quality: int, progress: bool,
                   strengths: tuple[float, float]) -> None:
    """Write every level as a tiled JPEG page of the main IFD chain, rendering tile by tile."""
    import tifffile

    shapes = pyramid_shapes(scene.width, scene.height)
    grids = [(-(-h // tile), -(-w // tile)) for h, w in shapes]
    # classic TIFF offsets end at 4 GiB; JPEG at any usual quality stays far below the raw size
    bigtiff = scene.width * scene.height * 3 > 2 ** 32
    with progress_bar(total=sum(r * c for r, c in grids), disable=not progress, unit="tile",
              desc="example slide") as bar, tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for level, ((h, w), (rows, cols)) in enumerate(zip(shapes, grids)):
            textures = level_textures(seed, level, scene.mpp * 4 ** level)
            tiles = (render_tile(scene, textures, level, r, c, tile, strengths)
                     for r in range(rows) for c in range(cols))
            # each level records its own pixel size; OpenSlide reports level 0's as openslide.mpp-x/y
            pixels_per_cm = 1e4 / (scene.mpp * 4 ** level)
            tif.write(_counted(tiles, bar), shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile),
                      photometric="rgb", compression="jpeg", compressionargs={"level": quality},
                      subfiletype=0 if level == 0 else 1, resolution=(pixels_per_cm, pixels_per_cm),
                      resolutionunit="CENTIMETER", metadata=None)


def _counted(items: Iterator[np.ndarray], bar: Any) -> Iterator[np.ndarray]:
    """Pass ``items`` through, advancing the progress bar after each."""
    for item in items:
        yield item
        bar.update()


def _write_nuclei_csv(path: Path, nuclei: Nuclei, slide_name: str) -> None:
    """One row per nucleus, in the columns of a point-annotation CSV: slide, x, y, label."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "x", "y", "label"])
        for x, y, k in zip(nuclei.x.tolist(), nuclei.y.tolist(), nuclei.label.tolist()):
            writer.writerow([slide_name, f"{x:.2f}", f"{y:.2f}", CLASS_NAMES[k]])
