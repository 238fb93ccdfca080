"""Tissue masks from slide overviews: where stained tissue is, so tiling skips glass and dust."""
from __future__ import annotations

from typing import Callable

import numpy as np

#: A tissue masker: any function (or object with ``__call__``) from an RGB overview (H, W, 3) uint8 to a boolean
#: (H, W) mask of tissue. ``bioaug.tile(..., tissue_masker=...)`` takes one; :func:`tissue_mask` is the default.
TissueMasker = Callable[[np.ndarray], np.ndarray]

#: Optical density (summed over RGB) below which a pixel is treated as glass whatever Otsu says.
MIN_TISSUE_OD = 0.12
#: Threshold cap: on an overview that is all tissue, Otsu splits stroma from nuclei; the cap keeps stroma in.
MAX_TISSUE_OD = 0.25


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Summed optical density -log10(I/255) over RGB; 0 for white glass, larger for stain."""
    return -np.log10(np.clip(rgb.astype(np.float32), 1, 255) / 255.0).sum(axis=-1)


def tissue_mask(rgb: np.ndarray, *, min_object_fraction: float = 0.0005) -> np.ndarray:
    """Boolean mask of stained tissue in an RGB overview.

    Otsu's threshold on optical density, clamped to [``MIN_TISSUE_OD``, ``MAX_TISSUE_OD``] so that a blank slide
    gives an empty mask and a slide that is all tissue gives a full one; then holes are filled and specks
    smaller than ``min_object_fraction`` of the overview removed.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    density = ndi.gaussian_filter(optical_density(rgb), sigma=1.0)
    threshold = threshold_otsu(density) if np.ptp(density) > 0 else MAX_TISSUE_OD
    mask = density > float(np.clip(threshold, MIN_TISSUE_OD, MAX_TISSUE_OD))
    mask = ndi.binary_closing(mask, structure=np.ones((3, 3)), iterations=2, border_value=1)
    mask = ndi.binary_fill_holes(mask)
    min_size = max(1, int(min_object_fraction * mask.size))
    return remove_small_objects(mask, max_size=min_size)


def mask_fraction(mask: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Fraction of tissue in ``box`` = (x0, y0, x1, y1) given in mask pixels (clipped to the mask)."""
    height, width = mask.shape
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float(mask[y0:y1, x0:x1].mean())


def in_mask(mask: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether points (in mask pixels) fall on tissue; points outside the mask are not."""
    height, width = mask.shape
    col, row = np.floor(x).astype(int), np.floor(y).astype(int)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    result = np.zeros(len(col), dtype=bool)
    result[inside] = mask[row[inside], col[inside]]
    return result
