"""Rendering one tile of one pyramid level of an example slide from its scene.

Haematoxylin and eosin concentrations (between nuclei from the compartments and textures drawn at the level's
own scale, in nuclei from their shapes) are mixed by Beer-Lambert absorption, so every level agrees with the
others and no level is ever held in memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from .layout import TISSUE_EDGE, Composition
from .nuclei import MORPHOLOGY, Nuclei
from .scene import Scene

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
_NUCLEUS_EDGE_UM = 0.4       # blur of the nuclear outline

_TEXTURE_SIZE = 1024  # side of the periodic texture images, level pixels (256 µm at 0.25 µm/px)
_FIBRE_DIRECTIONS = 8


@dataclass(frozen=True)
class Textures:
    """Periodic textures drawn at one level's scale, fine detail faded where a pixel would average it out."""

    chromatin: np.ndarray  # (..., size, size)
    mottle: np.ndarray     # (..., size, size), cytoplasm
    fibres: np.ndarray     # (_FIBRE_DIRECTIONS, size, size): fibres along angle k * pi / _FIBRE_DIRECTIONS
    noise: np.ndarray      # (size, size, 3) white noise, 8-bit units

    def window(self, y0: int, x0: int, n: int) -> Textures:
        """The ``n`` x ``n`` block at level pixel ``(y0, x0)``, wrapping around the period."""
        size = self.chromatin.shape[-1]
        ys, xs = y0 % size, x0 % size
        if ys + n <= size and xs + n <= size:
            rows, cols = slice(ys, ys + n), slice(xs, xs + n)
        else:
            rows, cols = (np.arange(ys, ys + n) % size)[:, None], (np.arange(xs, xs + n) % size)[None, :]
        return Textures(chromatin=self.chromatin[..., rows, cols], mottle=self.mottle[..., rows, cols],
                         fibres=self.fibres[..., rows, cols], noise=self.noise[rows, cols])


def level_textures(seed: int, level: int, um_per_px: float) -> Textures:
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
    return Textures(chromatin=texture(chromatin, 0.6, 0.6), mottle=texture(mottle, 2.0, 2.0),
                     fibres=np.stack(directions),
                     noise=_NOISE_RGB * rng.standard_normal((size, size, 3), np.float32))


def render_tile(scene: Scene, textures: Textures, level: int, row: int, col: int, tile: int,
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
    if (scene.layout.tissue.on_lattice(y_um, x_um) > -TISSUE_EDGE / 2).any():
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


def _compartment_stain(where: Composition, local: Textures) -> tuple[np.ndarray, np.ndarray]:
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


def _draw_nuclei(nuclei: Nuclei, local: Textures, mpp: float, down: int, y0: int, x0: int,
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
    for k, shape in enumerate(MORPHOLOGY):
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
