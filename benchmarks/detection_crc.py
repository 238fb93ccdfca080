"""Benchmark bioaug's training-free nucleus detector on CRCHistoPhenotypes: accuracy, speed and stain robustness.

Runs :func:`bioaug.nuclei.detect_nuclei` on the 100 images and matches the detections one-to-one with all
29,756 marked nucleus centres within 6 px, the protocol of Sirinukunwattana et al. (IEEE TMI 2016), whose
published F1 scores at 20x are: SC-CNN (trained) 0.802, LIPSyM (training-free) about 0.60, CRImage about 0.54.

Four detectors run on every image, interleaved so that machine load hits them alike:

- ``baseline``: the detector as it was before it was rewritten for speed (full-resolution votes and
  segmentation, ``skimage.color.rgb2hed``), kept in this script only to measure against;
- ``current``: ``detect_nuclei`` with its defaults (stain taken as it is);
- ``slide_reference``: ``detect_nuclei`` given one ``hematoxylin_reference`` pooled over all images of the
  condition, as the tile stage computes one per slide from several regions (the 100 images stand for one
  slide stained one way; the pooled reference's time is shared out over the images);
- ``image_reference``: ``detect_nuclei`` given each image's own reference (the harder case: a single
  500 x 500 px field with few nuclei looks weakly stained, and its time is counted per image).

Time is CPU time of this process (``time.process_time``, one thread), so that other work on the machine
does not inflate it; wall-clock time is recorded too. The stain sweep then reruns the three on the images
with their haematoxylin optical density scaled to 100%, 50%, 25% and 12.5% (``skimage.color.rgb2hed`` /
``hed2rgb``; 100% is the round trip alone) and after a seeded ``albumentations.HEStain`` jitter.

Usage::

    python benchmarks/detection_crc.py [--data DIR] [--radius 6] [--mpp 0.55] [--images 100] [--out FILE]

The data stay where they are; only the numbers (JSON, with the detector's parameters and the package
versions) and a figure of F1 against stain strength (PNG, beside the JSON) are written.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage as ndi
from scipy.io import loadmat
from skimage.color import hed2rgb, rgb2hed
from skimage.feature import peak_local_max
from skimage.io import imread

from bioaug.nuclei import (DetectionParams, Nuclei, _features, detect_nuclei, hematoxylin_reference,
                           match_points)
from bioaug.progress import progress_bar
from bioaug.provenance import atomic_path, package_versions, write_json_atomic

REPO = Path(__file__).resolve().parent.parent
N_IMAGES = 100
STRENGTHS = (1.0, 0.5, 0.25, 0.125)
HESTAIN_SEED = 0
DETECTORS = ("baseline", "current", "slide_reference", "image_reference")


# ------------------------------------------------------------------------------------------------------------
# Baseline: the detector before its rewrite for speed (bioaug.nuclei as of commit b216601), unchanged in
# what it computes. Only this benchmark uses it.
# ------------------------------------------------------------------------------------------------------------

#: The previous detector's settings (its other parameters are today's defaults, unchanged).
BASELINE_PARAMS = DetectionParams(gradient_sigma_um=0.55, threshold=0.016, min_distance_um=1.65)


def _baseline_votes(h: np.ndarray, mpp: float, params: DetectionParams) -> np.ndarray:
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
        blur = math.hypot(params.vote_spread * radius, params.smooth_sigma_um / mpp)
        votes += ndi.gaussian_filter(landed.reshape(h.shape).astype(np.float32), blur)
    return votes / len(params.radii_um)


def _baseline_segment(smooth: np.ndarray, peaks: np.ndarray, mpp: float, params: DetectionParams) -> np.ndarray:
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
    holes, n_holes = ndi.label(ndi.binary_fill_holes(labels > 0) & (labels == 0))
    small = np.bincount(holes.ravel(), minlength=n_holes + 1) <= math.pi * radius**2
    small[0] = False
    fill = small[holes]
    labels[fill] = labels[near_row[fill], near_col[fill]]
    return labels


def baseline_detect_nuclei(rgb: np.ndarray, *, mpp: float, params: DetectionParams = BASELINE_PARAMS) -> Nuclei:
    """The previous detector: every step at the image's own resolution, absolute threshold."""
    h = rgb2hed(rgb)[..., 0].astype(np.float32)
    votes = _baseline_votes(h, mpp, params)
    peaks = peak_local_max(votes, min_distance=max(1, round(params.min_distance_um / mpp)),
                           threshold_abs=params.threshold, exclude_border=False)
    if len(peaks) == 0:
        return Nuclei(x=np.zeros(0), y=np.zeros(0), features=np.zeros((0, 3)))
    labels = _baseline_segment(ndi.gaussian_filter(h, params.gradient_sigma_um / mpp), peaks, mpp, params)
    return Nuclei(x=peaks[:, 1].astype(np.float64), y=peaks[:, 0].astype(np.float64),
                  features=_features(h, labels, len(peaks), mpp))


# ------------------------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------------------------

def load_centres(data: Path, n: int) -> np.ndarray:
    """Marked nucleus centres of image ``n`` as (x, y) in the MATLAB 1-based pixel convention of the files."""
    return loadmat(data / "annotations" / f"img{n}" / f"img{n}_detection.mat")["detection"].reshape(-1, 2)


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from match counts (0 where undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def scale_hematoxylin(rgb: np.ndarray, strength: float) -> np.ndarray:
    """The image with its haematoxylin optical density multiplied by ``strength`` (colour deconvolution)."""
    hed = rgb2hed(rgb)
    hed[..., 0] *= strength
    return np.clip(np.round(hed2rgb(hed) * 255), 0, 255).astype(np.uint8)


def detectors(mpp: float, params: DetectionParams, slide_reference: float
              ) -> dict[str, Callable[[np.ndarray], Nuclei]]:
    """The detectors compared, each a function of the image alone (`slide_reference` given)."""
    return {
        "baseline": lambda rgb: baseline_detect_nuclei(rgb, mpp=mpp),
        "current": lambda rgb: detect_nuclei(rgb, mpp=mpp, params=params),
        "slide_reference": lambda rgb: detect_nuclei(rgb, mpp=mpp, params=params,
                                                     stain_reference=slide_reference),
        "image_reference": lambda rgb: detect_nuclei(rgb, mpp=mpp, params=params,
                                                     stain_reference=hematoxylin_reference(rgb)),
    }


def run_condition(images: list[np.ndarray], centres: list[np.ndarray], mpp: float, params: DetectionParams,
                  radius: float, desc: str) -> dict[str, dict]:
    """Counts and times of every detector on one version of the images (interleaved image by image)."""
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    slide_reference = hematoxylin_reference(images)
    cpu = {name: 0.0 for name in DETECTORS}
    wall = {name: 0.0 for name in DETECTORS}
    cpu["slide_reference"] += time.process_time() - start_cpu
    wall["slide_reference"] += time.perf_counter() - start_wall
    found = detectors(mpp, params, slide_reference)
    counts = {name: np.zeros((len(images), 3), int) for name in DETECTORS}
    for i, rgb in enumerate(progress_bar(images, desc=desc, unit="image")):
        for name in DETECTORS:
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            nuclei = found[name](rgb)
            cpu[name] += time.process_time() - start_cpu
            wall[name] += time.perf_counter() - start_wall
            counts[name][i] = match_points(np.column_stack([nuclei.x, nuclei.y]), centres[i], radius)
    megapixels = sum(rgb.shape[0] * rgb.shape[1] for rgb in images) / 1e6
    result: dict[str, dict] = {"slide_reference_level": slide_reference}
    for name in DETECTORS:
        tp, fp, fn = (int(v) for v in counts[name].sum(axis=0))
        precision, recall, f1 = prf(tp, fp, fn)
        result[name] = {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1,
                        "mean_f1_per_image": float(np.mean([prf(*row)[2] for row in counts[name]])),
                        "ms_per_image": 1000 * cpu[name] / len(images),
                        "wall_ms_per_image": 1000 * wall[name] / len(images),
                        "megapixels_per_s": megapixels / cpu[name],
                        "per_image_tp_fp_fn": counts[name].tolist()}
    return result


def plot_sweep(path: Path, sweep: dict[str, dict], hestain: dict[str, dict]) -> None:
    """F1 against haematoxylin strength for each detector, with the HEStain jitter as points at the right."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    axes = figure.add_subplot()
    styles = {"baseline": ("tab:gray", "o", "previous detector"), "current": ("tab:blue", "s", "current"),
              "slide_reference": ("tab:red", "^", "current + slide reference"),
              "image_reference": ("tab:orange", "v", "current + per-image reference")}
    strengths = [float(s) for s in sweep]
    for name, (colour, marker, label) in styles.items():
        axes.plot([100 * s for s in strengths], [sweep[key][name]["f1"] for key in sweep], color=colour,
                  marker=marker, label=label)
        axes.scatter([150], [hestain[name]["f1"]], color=colour, marker=marker, s=60)
    axes.set_xscale("log", base=2)
    axes.set_xticks([12.5, 25, 50, 100, 150], ["12.5%", "25%", "50%", "100%", "HEStain\njitter"])
    axes.set_xlabel("haematoxylin optical density (share of the original)")
    axes.set_ylabel("F1 (CRCHistoPhenotypes, 6 px)")
    axes.set_ylim(0, 0.85)
    axes.grid(alpha=0.3)
    axes.legend(loc="center left")
    axes.set_title("Nucleus detection under weaker haematoxylin")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "crchistophenotypes",
                        help="CRCHistoPhenotypes folder with images/ and annotations/")
    parser.add_argument("--radius", type=float, default=6.0, help="matching radius in pixels")
    parser.add_argument("--mpp", type=float, default=0.55, help="resolution of the images in µm per pixel")
    parser.add_argument("--images", type=int, default=N_IMAGES,
                        help="use images 1..N only (for quick checks; results are reported on all 100)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "detection_crc.json",
                        help="JSON file for the results; the figure goes beside it (.png)")
    args = parser.parse_args(argv)
    if not (args.data / "images").is_dir() or not (args.data / "annotations").is_dir():
        sys.exit(f"CRCHistoPhenotypes not found at {args.data} (expected images/ and annotations/ in it); "
                 "pass its location with --data")
    if not 1 <= args.images <= N_IMAGES:
        sys.exit(f"--images must lie between 1 and {N_IMAGES}, got {args.images}")
    import albumentations as A

    params = DetectionParams()
    numbers = range(1, args.images + 1)
    images = [imread(args.data / "images" / f"img{n}.png")[..., :3] for n in numbers]
    # the .mat centres are MATLAB 1-based; 1 is subtracted (0-based scores lower, checked in earlier runs)
    centres = [load_centres(args.data, n) - 1 for n in numbers]

    original = run_condition(images, centres, args.mpp, params, args.radius, "original")
    sweep = {}
    for strength in STRENGTHS:
        scaled = [scale_hematoxylin(rgb, strength) for rgb in images]
        sweep[f"{strength:g}"] = run_condition(scaled, centres, args.mpp, params, args.radius,
                                               f"haematoxylin x{strength:g}")
    jitter = A.Compose([A.HEStain(p=1.0)], seed=HESTAIN_SEED)
    hestain = run_condition([jitter(image=rgb)["image"] for rgb in images], centres, args.mpp, params,
                            args.radius, "HEStain jitter")

    base = original["baseline"]
    print(f"{args.images} images, {base['tp'] + base['fn']} centres, radius {args.radius:g} px, CPU time:")
    print(f"{'detector':<16}{'precision':>10}{'recall':>8}{'F1':>8}{'ms/image':>10}{'MP/s':>7}{'speed-up':>10}")
    speedup = {name: original[name]["megapixels_per_s"] / base["megapixels_per_s"] for name in DETECTORS}
    for name in DETECTORS:
        row = original[name]
        print(f"{name:<16}{row['precision']:>10.4f}{row['recall']:>8.4f}{row['f1']:>8.4f}"
              f"{row['ms_per_image']:>10.1f}{row['megapixels_per_s']:>7.1f}{speedup[name]:>9.2f}x")
    print("F1 by haematoxylin strength:    " + "  ".join(f"{key:>6}" for key in sweep) + "  HEStain")
    for name in DETECTORS:
        print(f"  {name:<28} " + "  ".join(f"{sweep[key][name]['f1']:6.4f}" for key in sweep)
              + f"  {hestain[name]['f1']:7.4f}")

    write_json_atomic(args.out, {
        "benchmark": "CRCHistoPhenotypes nucleus detection: accuracy, speed, stain strength",
        "data": os.path.relpath(args.data.resolve(), REPO),  # committed results name paths relative to the repo
        "radius_px": args.radius,
        "mpp": args.mpp,
        "coordinates": "annotation centres are MATLAB 1-based; 1 is subtracted before matching",
        "n_images": args.images,
        "timing": "CPU time of this process (time.process_time), one thread; wall_ms_per_image beside it",
        "detectors": {"baseline": "the detector before its rewrite for speed (kept in this script)",
                      "current": "bioaug.nuclei.detect_nuclei, defaults",
                      "slide_reference": "detect_nuclei with stain_reference=hematoxylin_reference(all images "
                                         "of the condition)",
                      "image_reference": "detect_nuclei with stain_reference=hematoxylin_reference(image)"},
        "speedup_per_megapixel": speedup,
        "original": original,
        "stain_sweep": {"method": "skimage rgb2hed, haematoxylin channel scaled, hed2rgb, rounded to uint8",
                        "by_strength": sweep},
        "hestain_jitter": {"method": f"albumentations.HEStain(p=1) defaults, Compose seed {HESTAIN_SEED}",
                           **hestain},
        "params": asdict(params),
        "baseline_params": asdict(BASELINE_PARAMS),
        "versions": package_versions(),
    })
    figure = args.out.with_suffix(".png")
    plot_sweep(figure, sweep, hestain)
    print(f"wrote {args.out} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
