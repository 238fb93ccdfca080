"""The nuclei of an example slide: the three classes, how each looks, and where nuclei are placed.

Placement depends on the tissue compartments (``layout``) and keeps nuclei apart by hard-core thinning; the
nuclei are then sorted into a grid of level-0 pixels, so that a tile finds its own quickly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import integrate
from scipy.spatial import cKDTree

from .layout import Layout

CLASS_NAMES = ("lymphocyte", "epithelial", "fibroblast")
_STAIN_SPREAD = 0.35  # log-normal spread of the haematoxylin of nuclei of one class


@dataclass(frozen=True)
class Morphology:
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
MORPHOLOGY = (
    Morphology(length=(6.8, 0.4), width=(6.3, 0.4), spacing=8.0, stain=1.3, texture=0.15, rim=0.0, tip=0.0),
    Morphology(length=(10.5, 0.9), width=(8.0, 0.6), spacing=12.0, stain=1.3, texture=0.4, rim=0.6, tip=0.0),
    Morphology(length=(16.0, 1.5), width=(3.6, 0.3), spacing=16.0, stain=1.3, texture=0.15, rim=0.0, tip=0.7),
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


@dataclass(frozen=True)
class Nuclei:
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


def place_nuclei(rng: np.random.Generator, layout: Layout,
                  extent: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Centres (y, x in µm) and class indices of nuclei spaced apart inside ``[0, extent]``.

    Each round draws candidates per class with a density set by the compartments, drops those too close to
    nuclei already placed and, among the rest, drops the lower-priority one of every close pair (Matérn
    hard-core thinning). A few rounds fill space like sequential placement would, but stay vectorised.
    """
    spacing = np.array([[(a.spacing + b.spacing) / 2 for b in MORPHOLOGY] for a in MORPHOLOGY])
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


def _candidates(rng: np.random.Generator, layout: Layout, extent: tuple[float, float],
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


def describe_nuclei(rng: np.random.Generator, layout: Layout, yx_um: np.ndarray, label: np.ndarray, mpp: float,
                     shape: tuple[int, int], grid_cell: int) -> Nuclei:
    """Draw size, orientation and stain of each nucleus and sort them into the lookup grid of a slide of
    ``shape`` (height, width) level-0 pixels."""
    n = len(label)
    length = np.array([m.length for m in MORPHOLOGY])[label]
    width = np.array([m.width for m in MORPHOLOGY])[label]
    half_length = 0.5 * np.maximum(length[:, 0] + length[:, 1] * rng.standard_normal(n), 0.6 * length[:, 0])
    half_width = 0.5 * np.maximum(width[:, 0] + width[:, 1] * rng.standard_normal(n), 0.6 * width[:, 0])
    half_length = np.maximum(half_length, half_width)
    fibre = layout.composition(yx_um[:, 0], yx_um[:, 1], lattice=False).orientation
    angle = np.where(label == CLASS_NAMES.index("fibroblast"), fibre + 0.15 * rng.standard_normal(n),
                     rng.uniform(0, np.pi, n))
    stain = np.array([m.stain for m in MORPHOLOGY])[label] * np.exp(_STAIN_SPREAD * rng.standard_normal(n))
    # centres are rounded as the CSV writes them, so the CSV is exactly what is drawn (the margin of
    # background keeps them well inside [0, side - 1] already)
    y, x = (np.clip(np.round(yx_um[:, i] / mpp, 2), 0, side - 1) for i, side in enumerate(shape))
    rows, columns = (math.ceil(side / grid_cell) for side in shape)
    cell_id = (y // grid_cell).astype(np.int64) * columns + (x // grid_cell).astype(np.int64)
    order = np.lexsort((x, y, cell_id))
    return Nuclei(x=x[order], y=y[order], label=label[order],
                   half_length=half_length[order].astype(np.float32),
                   half_width=half_width[order].astype(np.float32), angle=angle[order].astype(np.float32),
                   stain=stain[order].astype(np.float32), cell=grid_cell, columns=columns,
                   starts=np.searchsorted(cell_id[order], np.arange(rows * columns + 1)))
