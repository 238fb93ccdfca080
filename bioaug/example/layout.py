"""Where the tissue of an example slide lies: smooth random fields in µm and the compartments they give.

Tissue, epithelial nests, lymphoid aggregates, fibre orientation and gland lumens are smooth fields on grids in
micrometres, independent of any pixel grid, so the same extent at another µm/px is the same tissue.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

TISSUE_EDGE = 0.15  # width of the tissue border, in units of the tissue field


@dataclass(frozen=True)
class Field:
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
class Composition:
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
class Layout:
    """Where the tissue and its compartments lie: smooth fields in µm, independent of any pixel grid."""

    tissue: Field    # one channel: > 0 inside tissue
    regions: Field   # epithelial nest (> 0 inside), lymphoid aggregate (> 0 inside), cos 2θ, sin 2θ of fibres
    glands: Field    # one channel, periodic: high values are gland lumens

    def composition(self, y_um: np.ndarray, x_um: np.ndarray, *, lattice: bool) -> Composition:
        """Compartments at points ``(y_um[k], x_um[k])`` or, with ``lattice``, on the grid ``y_um x x_um``."""
        sample = (lambda f: f.on_lattice(y_um, x_um)) if lattice else (lambda f: f.at_points(y_um, x_um))
        inside = sample(self.tissue)[0] / TISSUE_EDGE
        tissue, interior = _step(inside), _step(inside - 2)
        nest, aggregate, cos2, sin2 = sample(self.regions)
        lymphoid = _step(aggregate / 0.25)
        epithelium = _step(nest / 0.25) * (1 - lymphoid)
        gland = sample(self.glands)[0]
        lumen = epithelium * _step((gland - 1.3) / 0.3)
        gland_wall = epithelium * _step((gland - 0.8) / 0.5) - lumen
        return Composition(tissue=tissue, interior=interior, lymphoid=lymphoid, epithelium=epithelium,
                            lumen=lumen, gland_wall=gland_wall, stroma=1 - lymphoid - epithelium,
                            orientation=0.5 * np.arctan2(sin2, cos2))


def _step(x: np.ndarray) -> np.ndarray:
    """Smooth step from 0 (x <= -0.5) to 1 (x >= 0.5)."""
    t = np.clip(0.5 + x, 0, 1)
    return t * t * (3 - 2 * t)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float,
                  periodic: bool = False) -> np.ndarray:
    """Gaussian-filtered white noise, standardised to mean 0 and standard deviation 1."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap" if periodic else "reflect")
    return ((field - field.mean()) / field.std()).astype(np.float32)


def tissue_field(rng: np.random.Generator, extent: tuple[float, float]) -> Field:
    """Ragged tissue covering 40-60% of the slide, none within 5% of its border.

    The tissue scales with the slide (a grid of 128 nodes on the long side) so that tiny test slides and large
    benchmark slides both show tissue and background. A slope towards the border rounds the outline off.
    """
    cell = max(extent) / 127
    shape = tuple(max(2, math.ceil(e / cell) + 1) for e in extent)
    field = smooth_noise(rng, shape, 10) + 0.3 * smooth_noise(rng, shape, 2.5)
    margin = 0.05 * min(extent)
    y = np.abs(np.arange(shape[0]) * cell - extent[0] / 2) / (extent[0] / 2 - margin)
    x = np.abs(np.arange(shape[1]) * cell - extent[1] / 2) / (extent[1] / 2 - margin)
    radius = np.add.outer(y ** 4, x ** 4) ** 0.25  # 1 on a rounded rectangle inside the margin
    inside = radius < 1
    field -= 6 * np.clip(2 * radius - 1, 0, 1) ** 2
    share = min(0.9, rng.uniform(0.4, 0.6) * field.size / max(1, inside.sum()))
    field -= np.quantile(field[inside], 1 - share)
    field[~inside] = np.minimum(field[~inside], -1)
    return Field(field[None].astype(np.float32), cell=cell, periodic=False)


def region_field(rng: np.random.Generator, extent: tuple[float, float], tissue: Field) -> Field:
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
    areas = Field(smooth_noise(rng, tissue.values.shape[1:], 8)[None], cell=tissue.cell, periodic=False)
    nest = smooth_noise(rng, shape, 70 / cell) + 0.7 * areas.on_lattice(y, x)[0]
    aggregate = smooth_noise(rng, shape, 30 / cell)
    cos2, sin2 = smooth_noise(rng, shape, 120 / cell), smooth_noise(rng, shape, 120 / cell)
    inside = tissue.on_lattice(y, x)[0] > 0
    if not inside.any():
        inside[...] = True
    aggregate -= np.quantile(aggregate[inside], 0.88)
    rest = inside & (aggregate < 0)
    nest -= np.quantile(nest[rest if rest.any() else inside], 0.6)
    return Field(np.stack([nest, aggregate, cos2, sin2]), cell=cell, periodic=False)
