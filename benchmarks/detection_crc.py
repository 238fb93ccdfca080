"""Benchmark bioaug's training-free nucleus detector on CRCHistoPhenotypes.

Runs :func:`bioaug.nuclei.detect_nuclei` on the 100 images and matches the detections one-to-one with all
29,756 marked nucleus centres within 6 px, the protocol of Sirinukunwattana et al. (IEEE TMI 2016), whose
published F1 scores at 20x are: SC-CNN (trained) 0.802, LIPSyM (training-free) about 0.60, CRImage about 0.54.

Usage::

    python benchmarks/detection_crc.py [--data DIR] [--radius 6] [--mpp 0.55] [--out FILE]

The data stay where they are; only the numbers are written (JSON, with the detector's parameters and the
package versions).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from skimage.io import imread
from tqdm import tqdm

from bioaug.nuclei import DetectionParams, detect_nuclei, match_points
from bioaug.provenance import package_versions, write_json_atomic

REPO = Path(__file__).resolve().parent.parent
N_IMAGES = 100


def load_centres(data: Path, n: int) -> np.ndarray:
    """Marked nucleus centres of image ``n`` as (x, y) in the MATLAB 1-based pixel convention of the files."""
    return loadmat(data / "annotations" / f"img{n}" / f"img{n}_detection.mat")["detection"].reshape(-1, 2)


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from match counts (0 where undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "crchistophenotypes",
                        help="CRCHistoPhenotypes folder with images/ and annotations/")
    parser.add_argument("--radius", type=float, default=6.0, help="matching radius in pixels")
    parser.add_argument("--mpp", type=float, default=0.55, help="resolution of the images in µm per pixel")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "detection_crc.json",
                        help="JSON file for the results")
    args = parser.parse_args(argv)
    if not (args.data / "images").is_dir() or not (args.data / "annotations").is_dir():
        sys.exit(f"CRCHistoPhenotypes not found at {args.data} (expected images/ and annotations/ in it); "
                 "pass its location with --data")

    params = DetectionParams()
    # the .mat centres are MATLAB 1-based; both conventions are scored as a check, 1-based is the result
    counts = {"one_based": np.zeros((N_IMAGES, 3), int), "zero_based": np.zeros((N_IMAGES, 3), int)}
    seconds = []
    for i, n in enumerate(tqdm(range(1, N_IMAGES + 1), desc="detecting", unit="image")):
        rgb = imread(args.data / "images" / f"img{n}.png")[..., :3]
        start = time.perf_counter()
        nuclei = detect_nuclei(rgb, mpp=args.mpp, params=params)
        seconds.append(time.perf_counter() - start)
        found = np.column_stack([nuclei.x, nuclei.y])
        centres = load_centres(args.data, n)
        counts["one_based"][i] = match_points(found, centres - 1, args.radius)
        counts["zero_based"][i] = match_points(found, centres, args.radius)

    per_image = counts["one_based"]
    tp, fp, fn = (int(v) for v in per_image.sum(axis=0))
    precision, recall, f1 = prf(tp, fp, fn)
    mean_f1 = float(np.mean([prf(*row)[2] for row in per_image]))
    f1_zero_based = prf(*counts["zero_based"].sum(axis=0))[2]
    ms_per_image = 1000 * float(np.mean(seconds))
    print(f"micro-averaged over {N_IMAGES} images, {tp + fn} centres, radius {args.radius:g} px:")
    print(f"  precision {precision:.4f}  recall {recall:.4f}  F1 {f1:.4f}")
    print(f"  per-image mean F1 {mean_f1:.4f}")
    print(f"  F1 if the centres were 0-based: {f1_zero_based:.4f} (1-based is used)")
    print(f"  {ms_per_image:.1f} ms per {rgb.shape[1]}x{rgb.shape[0]} image")

    write_json_atomic(args.out, {
        "benchmark": "CRCHistoPhenotypes nucleus detection",
        "data": str(args.data.resolve()),
        "radius_px": args.radius,
        "mpp": args.mpp,
        "coordinates": "annotation centres are MATLAB 1-based; 1 is subtracted before matching",
        "n_images": N_IMAGES,
        "tp": tp, "fp": fp, "fn": fn,
        "precision": precision, "recall": recall, "f1": f1,
        "mean_f1_per_image": mean_f1,
        "f1_if_zero_based": f1_zero_based,
        "ms_per_image": ms_per_image,
        "per_image_tp_fp_fn": per_image.tolist(),
        "params": asdict(params),
        "versions": package_versions(),
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
