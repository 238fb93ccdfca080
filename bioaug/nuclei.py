"""Training-free nucleus detection and per-nucleus features on H&E images.

Nuclei are found where haematoxylin edges converge: each pixel on a haematoxylin edge votes for the points
that lie one nucleus radius inside it, along its gradient (a radial symmetry transform, [1]_). Votes pile up at
the centre of a nucleus whether it is solid and dark (lymphocytes) or pale with a dark rim (vesicular
epithelial nuclei), where a peak of the smoothed haematoxylin lands on the rim instead: on CRCHistoPhenotypes
this moves the F1 score of centre detection from about 0.70 to 0.74. Each nucleus is then measured over the
pixels nearest its centre that exceed half of its own peak haematoxylin, so its size does not depend on how
strongly the slide is stained.

All parameters are in micrometres and haematoxylin optical density, so one set works at any resolution
given the image's µm/px.

References
----------
.. [1] G. Loy and A. Zelinsky, "Fast radial symmetry for detecting points of interest," IEEE Trans. Pattern
       Anal. Mach. Intell., vol. 25, no. 8, pp. 959-973, 2003.
.. [2] A. C. Ruifrok and D. A. Johnston, "Quantification of histochemical staining by color deconvolution,"
       Anal. Quant. Cytol. Histol., vol. 23, no. 4, pp. 291-299, 2001.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage.color import rgb2hed
from skimage.feature import peak_local_max

from bioaug.errors import ConfigError

FEATURE_NAMES = ("area_um2", "eccentricity", "mean_hematoxylin")


@dataclass(frozen=True)
class DetectionParams:
    """Settings of :func:`detect_nuclei`, in physical units so that they hold at any resolution.

    The defaults were tuned on CRCHistoPhenotypes (colorectal H&E, 20x, 0.55 µm/px) and checked on MoNuSeg
    (seven organs, 40x, 0.25 µm/px).

    Attributes
    ----------
    radii_um : tuple of float
        Nucleus radii voted for, in µm. 2.2 to 4.4 µm spans small lymphocytes to large epithelial nuclei.
    gradient_sigma_um : float
        Gaussian scale of the haematoxylin gradient and of the image used for segmentation, in µm: about the
        size of chromatin texture, which it smooths away.
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
        of the edges pointing at it. It is absolute, not relative to the image, so an image with few nuclei
        (stroma, fat) is not forced to yield some.
    size_fraction : float
        A nucleus extends to where the smoothed haematoxylin falls below this fraction of its own peak value
        (0.5: full width at half maximum).
    """

    radii_um: tuple[float, ...] = (2.2, 3.3, 4.4)
    gradient_sigma_um: float = 0.55
    min_gradient: float = 0.0036
    vote_spread: float = 0.5
    smooth_sigma_um: float = 1.1
    min_distance_um: float = 1.65
    threshold: float = 0.016
    size_fraction: float = 0.5

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


@dataclass
class Nuclei:
    """Detected nuclei: centres in pixel coordinates of the input image and one row of features each.

    Attributes
    ----------
    x : ndarray of float64, shape (N,)
        Column coordinate of each centre, in pixels.
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
    return rgb2hed(rgb)[..., 0].astype(np.float32)


def _radial_votes(h: np.ndarray, mpp: float, params: DetectionParams) -> np.ndarray:
    """Vote map of the radial symmetry transform: strength of the haematoxylin edges pointing at each pixel."""
    sigma = params.gradient_sigma_um / mpp
    gy = ndi.gaussian_filter(h, sigma, order=(1, 0)) / mpp
    gx = ndi.gaussian_filter(h, sigma, order=(0, 1)) / mpp
    magnitude = np.hypot(gx, gy)
    rows, cols = np.nonzero(magnitude > params.min_gradient)
    weight = magnitude[rows, cols]
    uy, ux = gy[rows, cols] / weight, gx[rows, cols] / weight
    height, width = h.shape
    votes = np.zeros(h.shape, np.float32)
    for radius_um in params.radii_um:
        radius = radius_um / mpp
        vy = np.rint(rows + radius * uy).astype(np.intp)
        vx = np.rint(cols + radius * ux).astype(np.intp)
        inside = (vy >= 0) & (vy < height) & (vx >= 0) & (vx < width)
        landed = np.bincount(vy[inside] * width + vx[inside], weight[inside], height * width)
        # the per-radius spread and the final smoothing compose into one Gaussian
        blur = math.hypot(params.vote_spread * radius, params.smooth_sigma_um / mpp)
        votes += ndi.gaussian_filter(landed.reshape(h.shape).astype(np.float32), blur)
    return votes / len(params.radii_um)


def _segment(smooth: np.ndarray, peaks: np.ndarray, mpp: float, params: DetectionParams) -> np.ndarray:
    """Label image of the nuclei: around each centre, the pixels above half its own peak haematoxylin.

    Touching nuclei are split by assigning each pixel to its nearest centre. The peak is searched within one
    radius of the centre because a pale nucleus's darkest pixels are on its rim; the region may extend to
    twice that radius so that elongated nuclei (fibroblasts) are not cut short, and includes the pale
    interior that a rim encloses.
    """
    n = len(peaks)
    seeds = np.ones(smooth.shape, bool)
    seeds[peaks[:, 0], peaks[:, 1]] = False
    labels = np.zeros(smooth.shape, np.int32)
    labels[peaks[:, 0], peaks[:, 1]] = np.arange(1, n + 1)
    distance, (near_row, near_col) = ndi.distance_transform_edt(seeds, return_indices=True)
    radius = max(params.radii_um) / mpp
    rows, cols = np.nonzero(distance <= 2 * radius)
    index = labels[near_row[rows, cols], near_col[rows, cols]] - 1
    values = smooth[rows, cols]
    within = distance[rows, cols] <= radius
    peak_value = np.zeros(n, smooth.dtype)
    np.maximum.at(peak_value, index[within], values[within])
    keep = values >= params.size_fraction * peak_value[index]
    labels[rows[keep], cols[keep]] = index[keep] + 1
    # the pale interior of a rimmed nucleus belongs to it; larger enclosed areas (lumens) do not
    holes, n_holes = ndi.label(ndi.binary_fill_holes(labels > 0) & (labels == 0))
    small = np.bincount(holes.ravel(), minlength=n_holes + 1) <= math.pi * radius**2
    small[0] = False
    fill = small[holes]
    labels[fill] = labels[near_row[fill], near_col[fill]]
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
                  tissue_mask: np.ndarray | None = None) -> Nuclei:
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
    votes = _radial_votes(h, mpp, params)
    peaks = peak_local_max(votes, min_distance=max(1, round(params.min_distance_um / mpp)),
                           threshold_abs=params.threshold, exclude_border=False)
    if tissue_mask is not None:
        peaks = peaks[np.asarray(tissue_mask, bool)[peaks[:, 0], peaks[:, 1]]]
    if len(peaks) == 0:
        empty = np.zeros(0)
        return Nuclei(x=empty, y=empty.copy(), features=np.zeros((0, len(FEATURE_NAMES))))
    labels = _segment(ndi.gaussian_filter(h, params.gradient_sigma_um / mpp), peaks, mpp, params)
    return Nuclei(x=peaks[:, 1].astype(np.float64), y=peaks[:, 0].astype(np.float64),
                  features=_features(h, labels, len(peaks), mpp))


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
