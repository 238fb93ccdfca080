"""Training-free nucleus detection and per-nucleus features on H&E images.

Nuclei are found where haematoxylin edges converge: each pixel on a haematoxylin edge votes for the points
that lie one nucleus radius inside it, along its gradient (a radial symmetry transform, [1]_). Votes pile up at
the centre of a nucleus whether it is solid and dark (lymphocytes) or pale with a dark rim (vesicular
epithelial nuclei), where a peak of the smoothed haematoxylin lands on the rim instead: on CRCHistoPhenotypes
this moves the F1 score of centre detection from about 0.70 to 0.74. Each nucleus is then measured over the
pixels nearest its centre that exceed half of its own peak haematoxylin, so its size does not depend on how
strongly the slide is stained.

Speed comes from where each step runs. Edges need the full resolution: the haematoxylin gradient is taken at
the image's own µm/px. Everything after it (votes, peaks, segmentation) runs on a grid of about
``work_mpp`` (1.1 µm/px), where the gradient is averaged over blocks of pixels: a nucleus 4 µm across still
spans several cells, and at 0.55 µm/px the grid has a quarter of the pixels. Centres are refined to a fraction
of a cell from the vote map around each peak.

The decision is relative to the stain: the vote threshold holds for a slide whose haematoxylin reference
level (:func:`hematoxylin_reference`, a high percentile of the tissue's haematoxylin, in the spirit of the
stain normalisation of Macenko et al. [3]_) is ``DetectionParams.reference_hematoxylin``; a slide stained more
weakly has its haematoxylin scaled up to that level before detection, so pale slides keep their nuclei.

All parameters are in micrometres and haematoxylin optical density, so one set works at any resolution
given the image's µm/px.

References
----------
.. [1] G. Loy and A. Zelinsky, "Fast radial symmetry for detecting points of interest," IEEE Trans. Pattern
       Anal. Mach. Intell., vol. 25, no. 8, pp. 959-973, 2003.
.. [2] A. C. Ruifrok and D. A. Johnston, "Quantification of histochemical staining by color deconvolution,"
       Anal. Quant. Cytol. Histol., vol. 23, no. 4, pp. 291-299, 2001.
.. [3] M. Macenko et al., "A method for normalizing histology slides for quantitative analysis," Proc. IEEE
       ISBI, pp. 1107-1110, 2009.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage.color import hed_from_rgb
from skimage.feature import peak_local_max

from bioaug.errors import ConfigError

FEATURE_NAMES = ("area_um2", "eccentricity", "mean_hematoxylin")

#: Light floor of ``skimage.color.rgb2hed``: intensities below it are clipped before the logarithm.
_LOG_FLOOR = 1e-6
#: Haematoxylin contributed by each 8-bit value of R, G and B (columns): ``rgb2hed``'s deconvolution as a
#: lookup table, since an 8-bit channel has only 256 logarithms.
_HEMATOXYLIN_LUT = np.ascontiguousarray(
    (np.log(np.maximum(np.arange(256) / 255.0, _LOG_FLOOR)) / np.log(_LOG_FLOOR))[:, None]
    * hed_from_rgb[None, :, 0], dtype=np.float32)
#: Gaussian kernels are cut at this many standard deviations (scipy's default is 4; the tail beyond 3 holds
#: 0.3% of the weight and a third of the work).
_TRUNCATE = 3.0
#: :func:`hematoxylin_reference` reads at most about this many pixels, evenly strided over the image.
_REFERENCE_SAMPLE = 2**16


@dataclass(frozen=True)
class DetectionParams:
    """Settings of :func:`detect_nuclei`, in physical units so that they hold at any resolution.

    The defaults were tuned on CRCHistoPhenotypes (colorectal H&E, 20x, 0.55 µm/px; the grid, gradient scale and
    threshold on its odd-numbered images, the even ones held out) and checked organ by organ on MoNuSeg (seven
    organs, 40x, 0.25 µm/px) by ``benchmarks/detection_organs.py``, whose grid search on both collections found
    no setting better beyond noise (the best traded 0.005 of CRCHistoPhenotypes F1 for 0.005 of mean F1
    over the organs).

    Attributes
    ----------
    radii_um : tuple of float
        Nucleus radii voted for, in µm. 2.2 to 4.4 µm spans small lymphocytes to large epithelial nuclei.
    gradient_sigma_um : float
        Gaussian scale of the haematoxylin gradient and of the image used for segmentation, in µm, before
        the block averaging onto the grid, which smooths further: together about the size of chromatin
        texture, which they smooth away.
    min_gradient : float
        Haematoxylin edges weaker than this (optical density per µm) do not vote. It only saves time: the votes
        are weighted by edge strength, so weak edges add little anyway.
    vote_spread : float
        Standard deviation of the blur applied to the votes for each radius, as a fraction of that radius, so
        that nuclei that are not perfect circles still concentrate their votes.
    smooth_sigma_um : float
        Gaussian scale of the final smoothing of the vote map, in µm.
    min_distance_um : float
        Two nuclei closer than this (centre to centre, in µm) are reported as one.
    threshold : float
        Minimum vote density at a nucleus centre, in haematoxylin optical density per µm: the summed strength
        of the edges pointing at it, on a slide stained at ``reference_hematoxylin``. It is not relative to
        the image's content, so an image with few nuclei (stroma, fat) is not forced to yield some.
    size_fraction : float
        A nucleus extends to where the smoothed haematoxylin falls below this fraction of its own peak value
        (0.5: full width at half maximum).
    work_mpp : float
        Resolution of the grid that votes, peaks and segmentation run on, in µm/px; an image is averaged over
        blocks of ``round(work_mpp / mpp)`` pixels (none if that is 1).
    reference_hematoxylin : float
        The :func:`hematoxylin_reference` of a typically stained slide, at which `threshold` and
        `min_gradient` hold (the median over CRCHistoPhenotypes).
    max_stain_gain : float
        A weakly stained slide's haematoxylin is scaled up by ``reference_hematoxylin`` over its own reference,
        by at most this factor (8: down to an eighth of the typical stain). Slides stained more strongly are
        not scaled down.
    """

    radii_um: tuple[float, ...] = (2.2, 3.3, 4.4)
    gradient_sigma_um: float = 0.35
    min_gradient: float = 0.0036
    vote_spread: float = 0.5
    smooth_sigma_um: float = 1.1
    min_distance_um: float = 1.1
    threshold: float = 0.018
    size_fraction: float = 0.5
    work_mpp: float = 1.1
    reference_hematoxylin: float = 0.1
    max_stain_gain: float = 8.0

    def __post_init__(self) -> None:
        # configuration files give lists; a tuple keeps the parameters hashable
        object.__setattr__(self, "radii_um", tuple(self.radii_um))
        for field in fields(self):
            value = getattr(self, field.name)
            values = value if isinstance(value, tuple) else (value,)
            if not values or not all(math.isfinite(v) and v >= 0 for v in values):
                raise ConfigError(f"DetectionParams.{field.name}", f"must be finite and >= 0, got {value!r}")
        if not all(r > 0 for r in self.radii_um):
            raise ConfigError("DetectionParams.radii_um", f"radii must be > 0, got {self.radii_um!r}")
        if not 0 < self.size_fraction < 1:
            raise ConfigError("DetectionParams.size_fraction", f"must be in (0, 1), got {self.size_fraction!r}")
        if self.work_mpp <= 0 or self.reference_hematoxylin <= 0 or self.max_stain_gain < 1:
            raise ConfigError("DetectionParams", "work_mpp and reference_hematoxylin must be > 0 and "
                                                 f"max_stain_gain >= 1, got {self.work_mpp!r}, "
                                                 f"{self.reference_hematoxylin!r}, {self.max_stain_gain!r}")


@dataclass
class Nuclei:
    """Detected nuclei: centres in pixel coordinates of the input image and one row of features each.

    Attributes
    ----------
    x : ndarray of float64, shape (N,)
        Column coordinate of each centre, in pixels (refined to a fraction of a pixel).
    y : ndarray of float64, shape (N,)
        Row coordinate of each centre, in pixels.
    features : ndarray of float64, shape (N, len(FEATURE_NAMES))
        Columns in the order of :data:`FEATURE_NAMES`: area in µm², eccentricity of the fitted ellipse
        (0 for a circle, towards 1 for elongated nuclei) and mean haematoxylin optical density.
    """

    x: np.ndarray
    y: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def _check_rgb(rgb: np.ndarray) -> None:
    """Raise ValueError unless ``rgb`` is a uint8 (H, W, 3) array, the only input the thresholds are tuned on."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ValueError(f"expected a uint8 RGB image of shape (H, W, 3), got shape {shape} and dtype {dtype}")


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density of an RGB image by colour deconvolution ([2]_, ``skimage.color.rgb2hed``).

    The same numbers as ``rgb2hed(rgb)[..., 0]`` (to float32 rounding), read from a lookup table.

    Parameters
    ----------
    rgb : (H, W, 3) ndarray of uint8
        An H&E image.

    Returns
    -------
    (H, W) ndarray of float32
        Haematoxylin density: 0 on white glass, about 0.03 to 0.2 inside nuclei.

    Raises
    ------
    ValueError
        If `rgb` is not a uint8 array of shape (H, W, 3).

    Examples
    --------
    >>> import numpy as np
    >>> float(hematoxylin(np.full((2, 2, 3), 255, np.uint8)).max())
    0.0
    """
    _check_rgb(rgb)
    h = _HEMATOXYLIN_LUT[:, 0].take(rgb[..., 0])
    h += _HEMATOXYLIN_LUT[:, 1].take(rgb[..., 1])
    h += _HEMATOXYLIN_LUT[:, 2].take(rgb[..., 2])
    return np.maximum(h, 0, out=h)


def hematoxylin_reference(rgb: np.ndarray | Sequence[np.ndarray],
                          tissue_mask: np.ndarray | Sequence[np.ndarray] | None = None, *,
                          percentile: float = 99.0) -> float:
    """Haematoxylin reference level of a slide: a high percentile of its tissue's haematoxylin density.

    The darkest nuclei set it, so it measures how strongly the slide took up haematoxylin rather than how
    much of it is nuclei. :func:`detect_nuclei` takes it as ``stain_reference`` and scales a weakly stained
    slide's haematoxylin up to ``DetectionParams.reference_hematoxylin``. Compute it once per slide at about
    the resolution of detection (a percentile of a heavily downsampled overview is lower, as nuclei blur into
    stroma), from one large region or several sampled ones, and pass the same value for every tile.

    Parameters
    ----------
    rgb : (H, W, 3) ndarray of uint8, or a sequence of them
        An H&E image, or several regions of one slide (pooled, each evenly sampled).
    tissue_mask : (H, W) ndarray of bool, or a sequence of them, optional
        Pixels to use, one mask per image; by default every pixel that is not glass (summed optical density
        above ``bioaug.tissue.MIN_TISSUE_OD``).
    percentile : float
        Which percentile of the tissue's haematoxylin to take.

    Returns
    -------
    float
        The reference level in haematoxylin optical density, NaN when there is no tissue (then
        :func:`detect_nuclei` leaves the stain as it is).

    Raises
    ------
    ValueError
        If an image is not a uint8 (H, W, 3) array or a mask does not have its image's shape (H, W).

    Examples
    --------
    >>> import numpy as np
    >>> image = np.full((8, 8, 3), (120, 60, 160), np.uint8)
    >>> round(hematoxylin_reference(image), 3)
    0.075
    >>> round(hematoxylin_reference([image, np.full((4, 6, 3), 255, np.uint8)]), 3)
    0.075
    >>> hematoxylin_reference(np.full((8, 8, 3), 255, np.uint8))
    nan
    """
    from .tissue import MIN_TISSUE_OD, optical_density

    images = [rgb] if isinstance(rgb, np.ndarray) else list(rgb)
    masks = [tissue_mask] if tissue_mask is None or isinstance(tissue_mask, np.ndarray) else list(tissue_mask)
    masks = masks * len(images) if tissue_mask is None else masks
    if len(masks) != len(images):
        raise ValueError(f"got {len(images)} images but {len(masks)} tissue masks")
    values = []
    for image, mask in zip(images, masks):
        _check_rgb(image)
        if mask is not None and np.shape(mask) != image.shape[:2]:
            raise ValueError(f"tissue_mask must have shape {image.shape[:2]}, got {np.shape(mask)}")
        # a percentile needs no more than an evenly strided sample of a large image
        step = max(1, math.ceil(math.sqrt(image.shape[0] * image.shape[1] / _REFERENCE_SAMPLE)))
        sample = image[::step, ::step]
        tissue = optical_density(sample) > MIN_TISSUE_OD if mask is None else np.asarray(mask, bool)[::step, ::step]
        values.append(hematoxylin(sample)[tissue])
    pooled = np.concatenate(values) if values else np.zeros(0, np.float32)
    return float(np.percentile(pooled, percentile)) if len(pooled) else math.nan


def _stain_gain(stain_reference: float | None, params: DetectionParams) -> float:
    """Factor that brings a slide's haematoxylin up to the reference level the thresholds hold at."""
    if stain_reference is None or not math.isfinite(stain_reference) or stain_reference <= 0:
        return 1.0
    return float(np.clip(params.reference_hematoxylin / stain_reference, 1.0, params.max_stain_gain))


def _block_mean(image: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Mean over consecutive blocks of ``factor`` pixels along one axis; a short last block is averaged too."""
    if factor == 1:
        return image
    view = np.swapaxes(image, 0, axis)
    out = view[0::factor].astype(np.float32)
    count = np.ones(len(out), np.float32)
    for offset in range(1, factor):
        part = view[offset::factor]
        out[:len(part)] += part
        count[:len(part)] += 1
    out /= count.reshape(-1, *([1] * (view.ndim - 1)))
    return np.ascontiguousarray(np.swapaxes(out, 0, axis))


def _gradient_on_grid(h: np.ndarray, mpp: float, factor: int,
                      params: DetectionParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Haematoxylin gradient taken at full resolution and averaged onto the grid, and the smoothed image there.

    The same as block means of ``gaussian_filter(h, sigma, order=...)``, but each separable pass after the
    first runs on the already averaged axis. Returns d/drow and d/dcol (optical density per µm) and the
    smoothed haematoxylin, each of the grid's shape.
    """
    sigma = params.gradient_sigma_um / mpp

    def gaussian(image: np.ndarray, axis: int, order: int = 0) -> np.ndarray:
        return ndi.gaussian_filter1d(image, sigma, axis=axis, order=order, truncate=_TRUNCATE)

    along_cols = _block_mean(gaussian(h, 1), factor, 1)
    along_rows = _block_mean(gaussian(h, 0), factor, 0)
    d_row = _block_mean(gaussian(along_cols, 0, order=1), factor, 0) / mpp
    d_col = _block_mean(gaussian(along_rows, 1, order=1), factor, 1) / mpp
    smooth = _block_mean(gaussian(along_cols, 0), factor, 0)
    return d_row, d_col, smooth


def _radial_votes(d_row: np.ndarray, d_col: np.ndarray, mpp: float, params: DetectionParams) -> np.ndarray:
    """Vote map of the radial symmetry transform: strength of the haematoxylin edges pointing at each cell.

    Votes land on a map padded by the largest radius, so none needs a bounds check; those in the padding are
    dropped. Each radius's votes are blurred by its own Gaussian; as Gaussians compose, the maps are added
    from the largest radius down with only the difference of blurs between them, then blurred once.
    """
    magnitude = np.hypot(d_row, d_col)
    flat = np.flatnonzero(magnitude > params.min_gradient)
    weight = magnitude.ravel()[flat]
    u_row, u_col = d_row.ravel()[flat] / weight, d_col.ravel()[flat] / weight
    height, width = magnitude.shape
    pad = int(math.ceil(max(params.radii_um) / mpp)) + 1
    padded_width = width + 2 * pad
    rows, cols = np.divmod(flat, width)
    base = (rows + pad) * padded_width + cols + pad
    votes = None
    previous_blur = 0.0
    for radius_um in sorted(params.radii_um, reverse=True):
        radius = radius_um / mpp
        landing = base + np.rint(radius * u_row).astype(np.intp) * padded_width
        landing += np.rint(radius * u_col).astype(np.intp)
        landed = np.bincount(landing, weight, (height + 2 * pad) * padded_width).astype(np.float32)
        landed = landed.reshape(height + 2 * pad, padded_width)[pad:-pad, pad:-pad]
        blur = math.hypot(params.vote_spread * radius, params.smooth_sigma_um / mpp)
        if votes is None:
            votes = landed
        else:
            votes = ndi.gaussian_filter(votes, math.sqrt(previous_blur**2 - blur**2), truncate=_TRUNCATE)
            votes += landed
        previous_blur = blur
    votes = ndi.gaussian_filter(votes, previous_blur, truncate=_TRUNCATE)
    return votes / len(params.radii_um)


def _refine(votes: np.ndarray, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-cell row and column of each peak: the vertex of a parabola through it and its two neighbours."""
    rows, cols = peaks[:, 0], peaks[:, 1]
    centre = votes[rows, cols].astype(np.float64)

    def offset(before: np.ndarray, after: np.ndarray) -> np.ndarray:
        curvature = before - 2 * centre + after
        safe = np.where(curvature < 0, curvature, -1.0)
        return np.where(curvature < 0, np.clip(0.5 * (before - after) / safe, -0.5, 0.5), 0.0)

    last_row, last_col = votes.shape[0] - 1, votes.shape[1] - 1
    d_row = offset(votes[np.maximum(rows - 1, 0), cols], votes[np.minimum(rows + 1, last_row), cols])
    d_col = offset(votes[rows, np.maximum(cols - 1, 0)], votes[rows, np.minimum(cols + 1, last_col)])
    return rows + d_row, cols + d_col


def _segment(smooth: np.ndarray, peaks: np.ndarray, mpp: float, params: DetectionParams) -> np.ndarray:
    """Label image of the nuclei: around each centre, the pixels above half its own peak haematoxylin.

    Touching nuclei are split by assigning each pixel to its nearest centre. The peak is searched within one
    radius of the centre because a pale nucleus's darkest pixels are on its rim; the region may extend to
    twice that radius so that elongated nuclei (fibroblasts) are not cut short, and includes the pale
    interior that a rim encloses. A centre's own pixel always belongs to it.
    """
    n = len(peaks)
    seeds = np.zeros(smooth.shape, np.int32)
    seeds[peaks[:, 0], peaks[:, 1]] = np.arange(1, n + 1)
    distance, (near_row, near_col) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    nearest = seeds[near_row, near_col]
    radius = max(params.radii_um) / mpp
    within = distance <= radius
    peak_value = np.zeros(n + 1, smooth.dtype)
    np.maximum.at(peak_value, nearest[within], smooth[within])
    labels = np.where((distance <= 2 * radius) & (smooth >= params.size_fraction * peak_value[nearest]),
                      nearest, 0)
    labels[seeds > 0] = seeds[seeds > 0]
    # the pale interior of a rimmed nucleus belongs to it; larger enclosed areas (lumens) do not. Enclosed
    # areas are the background components that do not reach the image border.
    background, n_background = ndi.label(labels == 0)
    small = np.bincount(background.ravel(), minlength=n_background + 1) <= math.pi * radius**2
    small[0] = False
    small[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = False
    fill = small[background]
    labels[fill] = nearest[fill]
    return labels


def _features(h: np.ndarray, labels: np.ndarray, n: int, mpp: float) -> np.ndarray:
    """Area, eccentricity and mean haematoxylin of each labelled nucleus, as skimage.measure.regionprops."""
    rows, cols = np.nonzero(labels)
    index = labels[rows, cols] - 1
    count = np.bincount(index, minlength=n).astype(np.float64)
    mean_h = np.bincount(index, h[rows, cols], n) / count
    mean_r = np.bincount(index, rows, n) / count
    mean_c = np.bincount(index, cols, n) / count
    dr, dc = rows - mean_r[index], cols - mean_c[index]
    # second central moments of each region give its inertia ellipse, as in skimage.measure.regionprops
    mu_rr = np.bincount(index, dr * dr, n) / count
    mu_cc = np.bincount(index, dc * dc, n) / count
    mu_rc = np.bincount(index, dr * dc, n) / count
    half_trace = (mu_rr + mu_cc) / 2
    spread = np.sqrt(((mu_rr - mu_cc) / 2) ** 2 + mu_rc**2)
    major, minor = half_trace + spread, half_trace - spread
    eccentricity = np.sqrt(1 - np.divide(minor, major, out=np.ones(n), where=major > 0))
    return np.column_stack([count * mpp**2, eccentricity, mean_h])


def detect_nuclei(rgb: np.ndarray, *, mpp: float, params: DetectionParams = DetectionParams(),
                  tissue_mask: np.ndarray | None = None, stain_reference: float | None = None) -> Nuclei:
    """Find nucleus centres in an H&E image and measure each nucleus, without any trained model.

    Parameters
    ----------
    rgb : (H, W, 3) ndarray of uint8
        An H&E image.
    mpp : float
        Resolution of `rgb` in µm per pixel; all `params` are scaled by it.
    params : DetectionParams, optional
        Detection settings in physical units.
    tissue_mask : (H, W) ndarray of bool, optional
        If given, nuclei whose centre falls outside it are dropped.
    stain_reference : float, optional
        The slide's :func:`hematoxylin_reference`. Below ``params.reference_hematoxylin`` the haematoxylin
        gradient is scaled up by their ratio (at most ``params.max_stain_gain``), so that a weakly stained
        slide is judged as a typical one; features keep the measured optical density. By default (None, or
        NaN) the stain is taken as it is.

    Returns
    -------
    Nuclei
        Centres in pixel coordinates of `rgb` and their :data:`FEATURE_NAMES` features. An image without
        haematoxylin (blank glass) gives zero nuclei.

    Raises
    ------
    ValueError
        If `rgb` is not a uint8 (H, W, 3) array, `mpp` is not a positive number or `tissue_mask` does not
        have shape (H, W).

    Examples
    --------
    >>> import numpy as np
    >>> from skimage.draw import disk
    >>> image = np.full((64, 64, 3), (230, 180, 220), np.uint8)
    >>> image[disk((32, 20), 6)] = (70, 50, 140)
    >>> nuclei = detect_nuclei(image, mpp=0.5)
    >>> len(nuclei), round(float(nuclei.x[0])), round(float(nuclei.y[0]))
    (1, 20, 32)
    """
    h = hematoxylin(rgb)
    mpp = float(mpp)
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of µm per pixel, got {mpp!r}")
    if tissue_mask is not None and np.shape(tissue_mask) != h.shape:
        raise ValueError(f"tissue_mask must have shape {h.shape}, got {np.shape(tissue_mask)}")
    factor = max(1, round(params.work_mpp / mpp))
    grid_mpp = mpp * factor
    d_row, d_col, smooth = _gradient_on_grid(h, mpp, factor, params)
    gain = _stain_gain(stain_reference, params)
    votes = _radial_votes(d_row * gain, d_col * gain, grid_mpp, params)
    peaks = peak_local_max(votes, min_distance=max(1, round(params.min_distance_um / grid_mpp)),
                           threshold_abs=params.threshold, exclude_border=False)
    rows, cols = _refine(votes, peaks)
    # a grid cell's centre lies (factor - 1) / 2 pixels from the first pixel of its block
    y, x = rows * factor + (factor - 1) / 2, cols * factor + (factor - 1) / 2
    if tissue_mask is not None:
        inside = np.asarray(tissue_mask, bool)[np.clip(np.rint(y).astype(int), 0, h.shape[0] - 1),
                                               np.clip(np.rint(x).astype(int), 0, h.shape[1] - 1)]
        peaks, x, y = peaks[inside], x[inside], y[inside]
    if len(peaks) == 0:
        empty = np.zeros(0)
        return Nuclei(x=empty, y=empty.copy(), features=np.zeros((0, len(FEATURE_NAMES))))
    labels = _segment(smooth, peaks, grid_mpp, params)
    h_grid = _block_mean(_block_mean(h, factor, 0), factor, 1)
    return Nuclei(x=x, y=y, features=_features(h_grid, labels, len(peaks), grid_mpp))


def match_points(pred_xy: np.ndarray, true_xy: np.ndarray, radius: float) -> tuple[int, int, int]:
    """Count true positives, false positives and false negatives of detected points against reference points.

    A detection is correct if it lies within `radius` of a reference point, each point being matched at most
    once. Among all one-to-one matchings the one with the most pairs is taken, and among those the one with the
    smallest total distance, solved exactly (Hungarian algorithm) on each cluster of points that lie within
    `radius` of each other.

    Parameters
    ----------
    pred_xy, true_xy : (N, 2) and (M, 2) array_like
        Detected and reference points, in the same coordinates (for example (x, y) in pixels).
    radius : float
        Largest distance at which a detection counts as a match, in the units of the points.

    Returns
    -------
    tp, fp, fn : int
        Matched pairs, unmatched detections and unmatched reference points.

    Examples
    --------
    >>> match_points([[0, 0], [1, 0]], [[0.5, 0]], radius=2)
    (1, 1, 0)
    """
    pred = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    true = np.asarray(true_xy, np.float64).reshape(-1, 2)
    if len(pred) == 0 or len(true) == 0:
        return 0, len(pred), len(true)
    pairs = cKDTree(pred).sparse_distance_matrix(cKDTree(true), radius, output_type="ndarray")
    # detections and references linked by within-radius pairs form clusters that are matched independently
    n_pred, n_nodes = len(pred), len(pred) + len(true)
    graph = coo_matrix((np.ones(len(pairs)), (pairs["i"], pairs["j"] + n_pred)), shape=(n_nodes, n_nodes))
    cluster = connected_components(graph, directed=False)[1][pairs["i"]]
    order = np.argsort(cluster, kind="stable")
    starts = np.flatnonzero(np.diff(cluster[order], prepend=-1))
    tp = 0
    for group in np.split(order, starts[1:]):
        rows, row_index = np.unique(pairs["i"][group], return_inverse=True)
        cols, col_index = np.unique(pairs["j"][group], return_inverse=True)
        # a missing pair costs more than any set of real pairs, so the matching with most pairs wins
        cost = np.full((len(rows), len(cols)), radius * min(len(rows), len(cols)) + 1.0)
        cost[row_index, col_index] = pairs["v"][group]
        assigned_rows, assigned_cols = linear_sum_assignment(cost)
        tp += int(np.sum(cost[assigned_rows, assigned_cols] <= radius))
    return tp, len(pred) - tp, len(true) - tp
