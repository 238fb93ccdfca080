"""The built-in example slide: a procedural H&E-like whole-slide image whose nuclei are known.

``write_example_slide`` writes a pyramidal, tiled, JPEG-compressed TIFF that OpenSlide opens (vendor
``generic-tiff``) and, beside it, ``<stem>.nuclei.csv`` with every nucleus centre and class in the shape of a
point-annotation CSV. It is the default input of ``bioaug demo`` and the ground truth for tests of tiling and
nucleus detection, so the nuclei are made to be found by a training-free haematoxylin detector and their classes
to differ in size, shape and staining:

- lymphocyte: small (about 6.5 µm), round and very dark, packed in aggregates and scattered in stroma;
- epithelial: larger (about 10.5 x 8 µm), oval and pale, with chromatin texture and a darker rim, in nests
  around gland lumens;
- fibroblast: a thin spindle (about 16 x 3.5 µm) in the stroma, aligned with the local fibre direction.

The scene is described once, in micrometres: smooth random fields (tissue, epithelial nests, lymphoid
aggregates, fibre orientation, gland lumens) and a list of nuclei kept in a spatial grid. Every tile of every
pyramid level is rendered from that description at the level's own scale, by Beer-Lambert mixing of a
haematoxylin and an eosin stain, so the levels agree with each other and no level is ever held in memory.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from scipy import fft as sfft
from scipy import integrate, ndimage
from scipy.spatial import cKDTree

from .errors import ConfigError
from .progress import progress_bar
from .provenance import atomic_path

CLASS_NAMES = ("lymphocyte", "epithelial", "fibroblast")


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
    scene = _build_scene(width, height, mpp, tile_size, seed)
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


# ----------------------------------------------------------------------------------------------------------------
# Appearance: stains, colours and nucleus morphology
# ----------------------------------------------------------------------------------------------------------------

# Optical density of one unit of each stain in R, G, B: the H&E reference of Macenko et al. (2009), typical of
# real slides and close enough to the vectors ``skimage.color.rgb2hed`` inverts that its haematoxylin channel
# separates nuclei from eosin-rich stroma.
_HAEMATOXYLIN = np.array([0.5626, 0.7201, 0.4062], np.float32)
_EOSIN = np.array([0.2159, 0.8012, 0.5581], np.float32)
_BACKGROUND_RGB = np.array([241, 238, 243], np.float32)  # glass, lumens and slide margins
_NOISE_RGB = 1.5  # standard deviation of per-pixel noise, in 8-bit units

# (haematoxylin, eosin) concentrations of the compartments between nuclei
_STROMA_STAIN = (0.04, 0.45)
_EPITHELIUM_STAIN = (0.12, 0.26)   # epithelium and lymphoid tissue alike between nuclei
_LYMPHOID_STAIN = (0.12, 0.26)
_LUMEN_STAIN = (0.0, 0.04)
_FIBRE_CONTRAST = 0.35     # relative eosin variation across stroma fibres
_MOTTLE_CONTRAST = 0.2     # relative eosin variation of cytoplasm
_NUCLEUS_CLEARS_EOSIN = 0.6  # share of the eosin a nucleus displaces
_STAIN_SPREAD = 0.35       # log-normal spread of the haematoxylin of nuclei of one class
_NUCLEUS_EDGE_UM = 0.4     # blur of the nuclear outline
_TISSUE_EDGE = 0.15        # width of the tissue border, in units of the tissue field


@dataclass(frozen=True)
class _Morphology:
    """How one nucleus class looks; diameters are in µm as (mean, standard deviation)."""

    length: tuple[float, float]
    width: tuple[float, float]
    spacing: float   # minimum centre distance to a nucleus of the same class, µm
    stain: float     # haematoxylin concentration
    texture: float   # relative amplitude of the chromatin texture
    rim: float       # relative extra stain at the nuclear membrane
    tip: float       # pointedness: the outline is tip * |u| + (1 - tip) * u**2 + v**2 = 1, an ellipse at 0

    @cached_property
    def area(self) -> float:
        """Area of the outline in units of the two semi-axes (pi for an ellipse)."""
        return 4 * integrate.quad(lambda u: math.sqrt((1 - u) * (1 + (1 - self.tip) * u)), 0, 1)[0]


# The classes share one mean haematoxylin and differ in size, shape, chromatin texture, membrane rim and
# crowding, so that a patch's colour statistics alone do not tell them apart (the demo's colour baseline).
_MORPHOLOGY = (
    _Morphology(length=(6.8, 0.4), width=(6.3, 0.4), spacing=8.0, stain=1.3, texture=0.15, rim=0.0, tip=0.0),
    _Morphology(length=(10.5, 0.9), width=(8.0, 0.6), spacing=12.0, stain=1.3, texture=0.4, rim=0.6, tip=0.0),
    _Morphology(length=(16.0, 1.5), width=(3.6, 0.3), spacing=16.0, stain=1.3, texture=0.15, rim=0.0, tip=0.7),
)

# Candidate nuclei per µm² and placement round, per class, added up over the compartments a place belongs to:
# lymphoid aggregate, epithelium (lumens excluded), gland wall (epithelium lining a lumen) and stroma.
# Rounds of hard-core thinning turn these into the final densities: packed lymphocytes about 9 µm apart,
# epithelial nuclei about 13 µm apart and lining the lumens, sparse fibroblasts and a few lymphocytes in stroma.
_INTENSITY = np.array([
    [1 / 40, 1 / 6000, 0.0, 1 / 8000],   # lymphocyte
    [0.0, 1 / 250, 1 / 110, 0.0],        # epithelial
    [0.0, 0.0, 0.0, 1 / 1500],           # fibroblast
])
_PLACEMENT_ROUNDS = 5


# ----------------------------------------------------------------------------------------------------------------
# Scene model: smooth fields in µm and the nuclei
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Field:
    """Channels of smooth values on a regular grid: node ``(i, j)`` sits at ``(i * cell, j * cell)`` µm.

    Sampling is bilinear, either at scattered points (nucleus placement) or on a lattice (a tile); both give
    the same value at the same place, which keeps nuclei and the tissue drawn around them consistent.
    """

    values: np.ndarray  # (channels, rows, cols) float32
    cell: float
    periodic: bool

    def _axis(self, coord_um: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = np.asarray(coord_um, np.float64) / self.cell
        if self.periodic:
            i0 = np.floor(c)
            frac = c - i0
            i0 = i0.astype(np.int64) % n
            return i0, (i0 + 1) % n, frac.astype(np.float32)
        c = np.clip(c, 0, n - 1)
        i0 = np.minimum(np.floor(c), n - 2).astype(np.int64)
        return i0, i0 + 1, (c - i0).astype(np.float32)

    def at_points(self, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        """Values at points ``(y_um[k], x_um[k])``, shape (channels, points)."""
        _, rows, cols = self.values.shape
        y0, y1, fy = self._axis(y_um, rows)
        x0, x1, fx = self._axis(x_um, cols)
        v = self.values
        return ((v[:, y0, x0] * (1 - fx) + v[:, y0, x1] * fx) * (1 - fy)
                + (v[:, y1, x0] * (1 - fx) + v[:, y1, x1] * fx) * fy)

    def on_lattice(self, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        """Values on the lattice ``y_um x x_um``, shape (channels, len(y_um), len(x_um))."""
        _, rows, cols = self.values.shape
        y0, y1, fy = self._axis(y_um, rows)
        x0, x1, fx = self._axis(x_um, cols)
        used, where = np.unique(np.concatenate([x0, x1]), return_inverse=True)
        sub = self.values[:, :, used]
        along_y = sub[:, y0] * (1 - fy)[:, None] + sub[:, y1] * fy[:, None]
        return along_y[:, :, where[:len(x0)]] * (1 - fx) + along_y[:, :, where[len(x0):]] * fx


@dataclass(frozen=True)
class _Composition:
    """Tissue compartments at some places: weights in [0, 1] and the local fibre orientation."""

    tissue: np.ndarray
    interior: np.ndarray     # tissue away from its border, where nuclei go so none sticks out
    lymphoid: np.ndarray     # lymphoid aggregate
    epithelium: np.ndarray   # epithelial nest, lumens included
    lumen: np.ndarray        # gland lumen (part of the epithelium weight)
    gland_wall: np.ndarray   # epithelium lining a lumen
    stroma: np.ndarray
    orientation: np.ndarray  # radians, fibre direction in the image plane (x right, y down)


@dataclass(frozen=True)
class _Nuclei:
    """Nuclei sorted into a grid of ``cell`` x ``cell`` level-0 pixels, so a tile finds its own quickly."""

    x: np.ndarray            # centre, level-0 pixels
    y: np.ndarray
    label: np.ndarray        # index into CLASS_NAMES
    half_length: np.ndarray  # µm
    half_width: np.ndarray   # µm
    angle: np.ndarray        # radians, long axis
    stain: np.ndarray        # haematoxylin concentration
    cell: int
    columns: int
    starts: np.ndarray       # nuclei of grid cell k are [starts[k], starts[k + 1])

    def within(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """Indices of the nuclei centred in the level-0 rectangle ``[x0, x1] x [y0, y1]``."""
        rows = (len(self.starts) - 1) // self.columns
        cx0, cx1 = max(0, math.floor(x0 / self.cell)), min(self.columns - 1, math.floor(x1 / self.cell))
        cy0, cy1 = max(0, math.floor(y0 / self.cell)), min(rows - 1, math.floor(y1 / self.cell))
        if cx0 > cx1 or cy0 > cy1:
            return np.empty(0, np.int64)
        first = [self.starts[cy * self.columns + cx0] for cy in range(cy0, cy1 + 1)]
        last = [self.starts[cy * self.columns + cx1 + 1] for cy in range(cy0, cy1 + 1)]
        return np.concatenate([np.arange(a, b) for a, b in zip(first, last)])


@dataclass(frozen=True)
class _Layout:
    """Where the tissue and its compartments lie: smooth fields in µm, independent of any pixel grid."""

    tissue: _Field    # one channel: > 0 inside tissue
    regions: _Field   # epithelial nest (> 0 inside), lymphoid aggregate (> 0 inside), cos 2θ, sin 2θ of fibres
    glands: _Field    # one channel, periodic: high values are gland lumens

    def composition(self, y_um: np.ndarray, x_um: np.ndarray, *, lattice: bool) -> _Composition:
        """Compartments at points ``(y_um[k], x_um[k])`` or, with ``lattice``, on the grid ``y_um x x_um``."""
        sample = (lambda f: f.on_lattice(y_um, x_um)) if lattice else (lambda f: f.at_points(y_um, x_um))
        inside = sample(self.tissue)[0] / _TISSUE_EDGE
        tissue, interior = _step(inside), _step(inside - 2)
        nest, aggregate, cos2, sin2 = sample(self.regions)
        lymphoid = _step(aggregate / 0.25)
        epithelium = _step(nest / 0.25) * (1 - lymphoid)
        gland = sample(self.glands)[0]
        lumen = epithelium * _step((gland - 1.3) / 0.3)
        gland_wall = epithelium * _step((gland - 0.8) / 0.5) - lumen
        return _Composition(tissue=tissue, interior=interior, lymphoid=lymphoid, epithelium=epithelium,
                            lumen=lumen, gland_wall=gland_wall, stroma=1 - lymphoid - epithelium,
                            orientation=0.5 * np.arctan2(sin2, cos2))


@dataclass(frozen=True)
class _Scene:
    """Everything that defines the example slide, independent of the pyramid level it is drawn at."""

    width: int
    height: int
    mpp: float
    layout: _Layout
    nuclei: _Nuclei


def _step(x: np.ndarray) -> np.ndarray:
    """Smooth step from 0 (x <= -0.5) to 1 (x >= 0.5)."""
    t = np.clip(0.5 + x, 0, 1)
    return t * t * (3 - 2 * t)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float,
                  periodic: bool = False) -> np.ndarray:
    """Gaussian-filtered white noise, standardised to mean 0 and standard deviation 1."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap" if periodic else "reflect")
    return ((field - field.mean()) / field.std()).astype(np.float32)


def _build_scene(width: int, height: int, mpp: float, grid_cell: int, seed: int) -> _Scene:
    """Draw the fields and place the nuclei; ``grid_cell`` (level-0 px) sizes the nucleus lookup grid."""
    rng_tissue, rng_regions, rng_glands, rng_nuclei = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    extent = (height * mpp, width * mpp)
    tissue = _tissue_field(rng_tissue, extent)
    regions = _region_field(rng_regions, extent, tissue)
    # lumens of 15 to 40 µm in a pattern repeating every 1 mm (only visible where there is epithelium)
    glands = _Field(_smooth_noise(rng_glands, (512, 512), 5.0, periodic=True)[None], cell=2.0, periodic=True)
    layout = _Layout(tissue, regions, glands)
    # everything so far depends on the physical extent only: the same extent at another µm/px is the same tissue
    yx_um, label = _place_nuclei(rng_nuclei, layout, extent)
    nuclei = _describe_nuclei(rng_nuclei, layout, yx_um, label, mpp, (height, width), grid_cell)
    return _Scene(width, height, mpp, layout, nuclei)


def _tissue_field(rng: np.random.Generator, extent: tuple[float, float]) -> _Field:
    """Ragged tissue covering 40-60% of the slide, none within 5% of its border.

    The tissue scales with the slide (a grid of 128 nodes on the long side) so that tiny test slides and large
    benchmark slides both show tissue and background. A slope towards the border rounds the outline off.
    """
    cell = max(extent) / 127
    shape = tuple(max(2, math.ceil(e / cell) + 1) for e in extent)
    field = _smooth_noise(rng, shape, 10) + 0.3 * _smooth_noise(rng, shape, 2.5)
    margin = 0.05 * min(extent)
    y = np.abs(np.arange(shape[0]) * cell - extent[0] / 2) / (extent[0] / 2 - margin)
    x = np.abs(np.arange(shape[1]) * cell - extent[1] / 2) / (extent[1] / 2 - margin)
    radius = np.add.outer(y ** 4, x ** 4) ** 0.25  # 1 on a rounded rectangle inside the margin
    inside = radius < 1
    field -= 6 * np.clip(2 * radius - 1, 0, 1) ** 2
    share = min(0.9, rng.uniform(0.4, 0.6) * field.size / max(1, inside.sum()))
    field -= np.quantile(field[inside], 1 - share)
    field[~inside] = np.minimum(field[~inside], -1)
    return _Field(field[None].astype(np.float32), cell=cell, periodic=False)


def _region_field(rng: np.random.Generator, extent: tuple[float, float], tissue: _Field) -> _Field:
    """Epithelial nests (about 35% of tissue), lymphoid aggregates (about 12%) and the fibre orientation.

    Nests of about 100 µm gather into epithelium-rich and stroma-rich areas at the scale of the slide, as in a
    tumour and its surroundings. Thresholds are quantiles over the tissue, so every slide, however small,
    holds all three compartments.
    """
    # nodes 8 µm apart, closer on tiny slides, further on huge ones (at most 1024 on a side)
    cell = max(min(8.0, max(extent) / 64), max(extent) / 1023)
    shape = tuple(max(2, math.ceil(e / cell) + 1) for e in extent)
    y = np.arange(shape[0]) * cell
    x = np.arange(shape[1]) * cell
    areas = _Field(_smooth_noise(rng, tissue.values.shape[1:], 8)[None], cell=tissue.cell, periodic=False)
    nest = _smooth_noise(rng, shape, 70 / cell) + 0.7 * areas.on_lattice(y, x)[0]
    aggregate = _smooth_noise(rng, shape, 30 / cell)
    cos2, sin2 = _smooth_noise(rng, shape, 120 / cell), _smooth_noise(rng, shape, 120 / cell)
    inside = tissue.on_lattice(y, x)[0] > 0
    if not inside.any():
        inside[...] = True
    aggregate -= np.quantile(aggregate[inside], 0.88)
    rest = inside & (aggregate < 0)
    nest -= np.quantile(nest[rest if rest.any() else inside], 0.6)
    return _Field(np.stack([nest, aggregate, cos2, sin2]), cell=cell, periodic=False)


def _place_nuclei(rng: np.random.Generator, layout: _Layout,
                  extent: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Centres (y, x in µm) and class indices of nuclei spaced apart inside ``[0, extent]``.

    Each round draws candidates per class with a density set by the compartments, drops those too close to
    nuclei already placed and, among the rest, drops the lower-priority one of every close pair (Matérn
    hard-core thinning). A few rounds fill space like sequential placement would, but stay vectorised.
    """
    spacing = np.array([[(a.spacing + b.spacing) / 2 for b in _MORPHOLOGY] for a in _MORPHOLOGY])
    n_classes = len(CLASS_NAMES)
    placed: list[list[np.ndarray]] = [[] for _ in range(n_classes)]
    for _ in range(_PLACEMENT_ROUNDS):
        trees = [cKDTree(np.concatenate(p)) if p else None for p in placed]
        candidates = []
        for k in range(n_classes):
            yx = _candidates(rng, layout, extent, _INTENSITY[k])
            free = np.ones(len(yx), bool)
            for j, tree in enumerate(trees):
                if tree is not None and len(yx):
                    free &= np.isinf(tree.query(yx, distance_upper_bound=spacing[k, j])[0])
            candidates.append(yx[free])
        priority = [rng.random(len(c)) for c in candidates]
        loses = [np.zeros(len(c), bool) for c in candidates]
        for a in range(n_classes):
            for b in range(a, n_classes):
                if not len(candidates[a]) or not len(candidates[b]):
                    continue
                pairs = cKDTree(candidates[a]).sparse_distance_matrix(
                    cKDTree(candidates[b]), spacing[a, b], output_type="ndarray")
                i, j = pairs["i"], pairs["j"]
                if a == b:
                    i, j = i[i < j], j[i < j]
                a_loses = priority[a][i] < priority[b][j]
                loses[a][i[a_loses]] = True
                loses[b][j[~a_loses]] = True
        for k in range(n_classes):
            placed[k].append(candidates[k][~loses[k]])
    yx = np.concatenate([np.concatenate(p) for p in placed])
    label = np.concatenate([np.full(sum(map(len, p)), k, np.int8) for k, p in enumerate(placed)])
    return yx, label


def _candidates(rng: np.random.Generator, layout: _Layout, extent: tuple[float, float],
                intensity: np.ndarray) -> np.ndarray:
    """Random points (y, x in µm) in ``[0, extent]`` with ``intensity`` per µm² in each compartment.

    Uniform points are thinned by the local density, a million at a time to bound memory on large slides.
    """
    n = rng.poisson(intensity.sum() * extent[0] * extent[1])
    kept = [np.empty((0, 2))]
    for start in range(0, n, 1 << 20):
        yx = rng.random((min(1 << 20, n - start), 2)) * extent
        where = layout.composition(yx[:, 0], yx[:, 1], lattice=False)
        compartments = np.stack([where.lymphoid, where.epithelium - where.lumen, where.gland_wall, where.stroma])
        density = where.interior * (intensity @ compartments) / intensity.sum()
        kept.append(yx[rng.random(len(yx)) < density])
    return np.concatenate(kept)


def _describe_nuclei(rng: np.random.Generator, layout: _Layout, yx_um: np.ndarray, label: np.ndarray, mpp: float,
                     shape: tuple[int, int], grid_cell: int) -> _Nuclei:
    """Draw size, orientation and stain of each nucleus and sort them into the lookup grid of a slide of
    ``shape`` (height, width) level-0 pixels."""
    n = len(label)
    length = np.array([m.length for m in _MORPHOLOGY])[label]
    width = np.array([m.width for m in _MORPHOLOGY])[label]
    half_length = 0.5 * np.maximum(length[:, 0] + length[:, 1] * rng.standard_normal(n), 0.6 * length[:, 0])
    half_width = 0.5 * np.maximum(width[:, 0] + width[:, 1] * rng.standard_normal(n), 0.6 * width[:, 0])
    half_length = np.maximum(half_length, half_width)
    fibre = layout.composition(yx_um[:, 0], yx_um[:, 1], lattice=False).orientation
    angle = np.where(label == CLASS_NAMES.index("fibroblast"), fibre + 0.15 * rng.standard_normal(n),
                     rng.uniform(0, np.pi, n))
    stain = np.array([m.stain for m in _MORPHOLOGY])[label] * np.exp(_STAIN_SPREAD * rng.standard_normal(n))
    # centres are rounded as the CSV writes them, so the CSV is exactly what is drawn (the margin of
    # background keeps them well inside [0, side - 1] already)
    y, x = (np.clip(np.round(yx_um[:, i] / mpp, 2), 0, side - 1) for i, side in enumerate(shape))
    rows, columns = (math.ceil(side / grid_cell) for side in shape)
    cell_id = (y // grid_cell).astype(np.int64) * columns + (x // grid_cell).astype(np.int64)
    order = np.lexsort((x, y, cell_id))
    return _Nuclei(x=x[order], y=y[order], label=label[order],
                   half_length=half_length[order].astype(np.float32),
                   half_width=half_width[order].astype(np.float32), angle=angle[order].astype(np.float32),
                   stain=stain[order].astype(np.float32), cell=grid_cell, columns=columns,
                   starts=np.searchsorted(cell_id[order], np.arange(rows * columns + 1)))


# ----------------------------------------------------------------------------------------------------------------
# Rendering: one tile of one level
# ----------------------------------------------------------------------------------------------------------------

_TEXTURE_SIZE = 1024  # side of the periodic texture images, level pixels (256 µm at 0.25 µm/px)
_FIBRE_DIRECTIONS = 8


@dataclass(frozen=True)
class _Textures:
    """Periodic textures drawn at one level's scale, fine detail faded where a pixel would average it out."""

    chromatin: np.ndarray  # (..., size, size)
    mottle: np.ndarray     # (..., size, size), cytoplasm
    fibres: np.ndarray     # (_FIBRE_DIRECTIONS, size, size): fibres along angle k * pi / _FIBRE_DIRECTIONS
    noise: np.ndarray      # (size, size, 3) white noise, 8-bit units

    def window(self, y0: int, x0: int, n: int) -> _Textures:
        """The ``n`` x ``n`` block at level pixel ``(y0, x0)``, wrapping around the period."""
        size = self.chromatin.shape[-1]
        ys, xs = y0 % size, x0 % size
        if ys + n <= size and xs + n <= size:
            rows, cols = slice(ys, ys + n), slice(xs, xs + n)
        else:
            rows, cols = (np.arange(ys, ys + n) % size)[:, None], (np.arange(xs, xs + n) % size)[None, :]
        return _Textures(chromatin=self.chromatin[..., rows, cols], mottle=self.mottle[..., rows, cols],
                         fibres=self.fibres[..., rows, cols], noise=self.noise[rows, cols])


def _level_textures(seed: int, level: int, um_per_px: float) -> _Textures:
    """Chromatin grain (about 0.6 µm), cytoplasm mottle (about 2 µm) and stroma fibres (about 10 x 1 µm)."""
    rng = np.random.default_rng([seed, 1, level])
    size = _TEXTURE_SIZE
    fy = sfft.fftfreq(size)[:, None]
    fx = sfft.rfftfreq(size)[None, :]

    def texture(spectrum: np.ndarray, along_um: float, across_um: float, angle: float = 0.0) -> np.ndarray:
        along, across = along_um / um_per_px, across_um / um_per_px
        f_along = fx * math.cos(angle) + fy * math.sin(angle)
        f_across = -fx * math.sin(angle) + fy * math.cos(angle)
        kernel = np.exp(-2 * np.pi ** 2 * ((along * f_along) ** 2 + (across * f_across) ** 2))
        image = sfft.irfft2(spectrum * kernel.astype(np.float32), s=(size, size))
        visible = min(1.0, 2 * math.sqrt(along * across))
        return (visible * image / image.std()).astype(np.float32)

    chromatin, mottle, fibres = (sfft.rfft2(rng.standard_normal((size, size), np.float32)) for _ in range(3))
    # one noise for every direction, so blending neighbouring directions keeps the same fibres
    directions = [texture(fibres, 10.0, 1.0, k * np.pi / _FIBRE_DIRECTIONS) for k in range(_FIBRE_DIRECTIONS)]
    return _Textures(chromatin=texture(chromatin, 0.6, 0.6), mottle=texture(mottle, 2.0, 2.0),
                     fibres=np.stack(directions),
                     noise=_NOISE_RGB * rng.standard_normal((size, size, 3), np.float32))


def _render_tile(scene: _Scene, textures: _Textures, level: int, row: int, col: int, tile: int,
                 strengths: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """RGB uint8 tile ``(row, col)`` of pyramid level ``level`` (downsample ``4 ** level``), with the
    haematoxylin and eosin scaled by ``strengths``."""
    down = 4 ** level
    gy = row * tile + np.arange(tile)
    gx = col * tile + np.arange(tile)
    local = textures.window(row * tile, col * tile, tile)
    # level pixel j covers level-0 pixels [j * down, (j + 1) * down); its centre in level-0 pixel coordinates:
    y_um = (gy * down + (down - 1) / 2) * scene.mpp
    x_um = (gx * down + (down - 1) / 2) * scene.mpp
    if (scene.layout.tissue.on_lattice(y_um, x_um) > -_TISSUE_EDGE / 2).any():
        where = scene.layout.composition(y_um, x_um, lattice=True)
        haem, eosin = _compartment_stain(where, local)
        haem_nuclei, cover = _draw_nuclei(scene.nuclei, local, scene.mpp, down, gy[0], gx[0], tile)
        haem = (where.tissue * haem + haem_nuclei) * strengths[0]
        eosin = where.tissue * eosin * (1 - _NUCLEUS_CLEARS_EOSIN * np.minimum(cover, 1)) * strengths[1]
        rgb = np.stack([haem, eosin], axis=-1) @ -np.stack([_HAEMATOXYLIN, _EOSIN])
        np.exp(rgb, out=rgb)
        rgb *= _BACKGROUND_RGB
    else:
        rgb = np.broadcast_to(_BACKGROUND_RGB, (tile, tile, 3))
    rgb = rgb + local.noise
    rgb += 0.5
    return np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)


def _compartment_stain(where: _Composition, local: _Textures) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin between nuclei: fibrous pink stroma, purple epithelium and lymphoid tissue."""
    direction = (where.orientation * (_FIBRE_DIRECTIONS / np.pi)) % _FIBRE_DIRECTIONS
    k0 = direction.astype(np.int64)
    blend = (direction - k0).astype(np.float32)
    near = np.take_along_axis(local.fibres, k0[None] % _FIBRE_DIRECTIONS, 0)[0]
    next_ = np.take_along_axis(local.fibres, (k0[None] + 1) % _FIBRE_DIRECTIONS, 0)[0]
    fibre = near + blend * (next_ - near)
    stroma_eosin = _STROMA_STAIN[1] * np.clip(1 + _FIBRE_CONTRAST * fibre, 0.2, 2)
    mottle = 1 + _MOTTLE_CONTRAST * local.mottle
    cytoplasm = where.epithelium - where.lumen
    haem = (where.stroma * _STROMA_STAIN[0] + cytoplasm * _EPITHELIUM_STAIN[0]
            + where.lymphoid * _LYMPHOID_STAIN[0] + where.lumen * _LUMEN_STAIN[0])
    eosin = (where.stroma * stroma_eosin + mottle * (cytoplasm * _EPITHELIUM_STAIN[1]
                                                     + where.lymphoid * _LYMPHOID_STAIN[1])
             + where.lumen * _LUMEN_STAIN[1])
    return haem.astype(np.float32), eosin.astype(np.float32)


def _draw_nuclei(nuclei: _Nuclei, local: _Textures, mpp: float, down: int, y0: int, x0: int,
                 tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin of the nuclei overlapping a tile at level pixel ``(y0, x0)``, and how much they cover.

    Each nucleus is drawn in a square stencil around its centre, vectorised over the nuclei of a class, with a
    soft edge. Nuclei smaller than a pixel (low levels) are scaled to keep their total stain, so a downsampled
    level looks like an average of level 0 rather than a field of dots.
    """
    haem = np.zeros(tile * tile)
    cover = np.zeros(tile * tile)
    um_per_px = mpp * down
    edge = max(1.0, _NUCLEUS_EDGE_UM / um_per_px)  # width of the soft edge, pixels
    reach = float(nuclei.half_length.max(initial=0)) / mpp + 2 * down
    found = nuclei.within(x0 * down - reach, (x0 + tile) * down + reach,
                          y0 * down - reach, (y0 + tile) * down + reach)
    for k, shape in enumerate(_MORPHOLOGY):
        idx = found[nuclei.label[found] == k]
        # centres in tile pixel coordinates (pixel i centred on i), semi-axes in pixels
        cy = ((nuclei.y[idx] - (down - 1) / 2) / down - y0).astype(np.float32)
        cx = ((nuclei.x[idx] - (down - 1) / 2) / down - x0).astype(np.float32)
        a = nuclei.half_length[idx] / um_per_px
        overlaps = (cy > -a - 1) & (cy < tile + a) & (cx > -a - 1) & (cx < tile + a)
        if not overlaps.any():
            continue
        idx, cy, cx, a = idx[overlaps], cy[overlaps], cx[overlaps], a[overlaps, None, None]
        b = nuclei.half_width[idx, None, None] / um_per_px
        half = math.ceil(float(a.max()) + edge)
        offsets = np.arange(-half, half + 1)
        py = np.round(cy).astype(np.int64)[:, None, None] + offsets[None, :, None]
        px = np.round(cx).astype(np.int64)[:, None, None] + offsets[None, None, :]
        dy, dx = py - cy[:, None, None], px - cx[:, None, None]
        cos, sin = np.cos(nuclei.angle[idx])[:, None, None], np.sin(nuclei.angle[idx])[:, None, None]
        u = np.abs(dx * cos + dy * sin) / a
        v = (dy * cos - dx * sin) / b
        rho = shape.tip * u + (1 - shape.tip) * u * u + v * v
        alpha = np.clip((1 - rho) * b / (2 * edge) + 0.5, 0, 1)
        alpha *= np.minimum(1, shape.area * a * b / np.maximum(alpha.sum(axis=(1, 2), keepdims=True), 1e-6))
        py, px = np.broadcast_arrays(py, px)
        drawn = (alpha > 0) & (py >= 0) & (py < tile) & (px >= 0) & (px < tile)
        py, px, alpha, rho = py[drawn], px[drawn], alpha[drawn], rho[drawn]
        rim = np.clip((rho - 0.55) / 0.45, 0, 1)
        stain = (np.broadcast_to(nuclei.stain[idx, None, None], drawn.shape)[drawn]
                 * (1 + shape.texture * local.chromatin[py, px]) * (1 + shape.rim * rim))
        flat = py * tile + px
        haem += np.bincount(flat, weights=alpha * stain, minlength=tile * tile)
        cover += np.bincount(flat, weights=alpha, minlength=tile * tile)
    return haem.reshape(tile, tile).astype(np.float32), cover.reshape(tile, tile).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Writing: the pyramid and the nucleus CSV
# ----------------------------------------------------------------------------------------------------------------

def _pyramid_shapes(width: int, height: int) -> list[tuple[int, int]]:
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


def _write_pyramid(path: Path, scene: _Scene, seed: int, tile: int, quality: int, progress: bool,
                   strengths: tuple[float, float]) -> None:
    """Write every level as a tiled JPEG page of the main IFD chain, rendering tile by tile."""
    import tifffile

    shapes = _pyramid_shapes(scene.width, scene.height)
    grids = [(-(-h // tile), -(-w // tile)) for h, w in shapes]
    # classic TIFF offsets end at 4 GiB; JPEG at any usual quality stays far below the raw size
    bigtiff = scene.width * scene.height * 3 > 2 ** 32
    with progress_bar(total=sum(r * c for r, c in grids), disable=not progress, unit="tile",
              desc="example slide") as bar, tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for level, ((h, w), (rows, cols)) in enumerate(zip(shapes, grids)):
            textures = _level_textures(seed, level, scene.mpp * 4 ** level)
            tiles = (_render_tile(scene, textures, level, r, c, tile, strengths)
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


def _write_nuclei_csv(path: Path, nuclei: _Nuclei, slide_name: str) -> None:
    """One row per nucleus, in the columns of a point-annotation CSV: slide, x, y, label."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "x", "y", "label"])
        for x, y, k in zip(nuclei.x.tolist(), nuclei.y.tolist(), nuclei.label.tolist()):
            writer.writerow([slide_name, f"{x:.2f}", f"{y:.2f}", CLASS_NAMES[k]])


