"""Memorisation audit: is any synthetic patch a near-copy of a real training patch?

For each synthetic patch the nearest real training patch is found in pixel space (RMS difference in 0-255
levels) and, when a feature function is given, in feature space. A sample is flagged as a near-copy when its
pixel distance to its nearest real patch is below ``copy_ratio`` times that real patch's distance to its own
nearest real neighbour: real patches are never exact copies of each other, so a sample much closer to one of
them than its real neighbours are has likely been memorised rather than generated. An exact copy has ratio 0.

Distances are exact (no approximate index): matrix products in batches on the given device, holding only the
real patches (uint8) and one batch of synthetic ones in memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..gan.grids import class_grid, write_png
from ..progress import progress_bar
from ..provenance import write_json_atomic
from ..store import PatchStore
from .records import write_csv_atomic

AUDIT_COLUMNS = ("patch_id", "label", "latent_index", "nearest_real_pixel", "pixel_distance",
                 "real_neighbour_distance", "pixel_ratio", "nearest_real_feature", "feature_distance",
                 "near_copy")
SHEET_PAIRS = 16
_REFERENCE_CHUNK = 4096


def _flat(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).flatten(1).float()


def nearest_pixels(queries: np.ndarray, reference: np.ndarray, device: torch.device, *,
                   offset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index in ``reference`` and RMS pixel distance of each query's nearest reference patch.

    With ``offset``, ``queries`` are ``reference[offset:offset + len(queries)]`` and each one's own row is
    excluded (real-to-real neighbour distances).
    """
    query = _flat(queries, device)
    best = torch.full((len(query),), float("inf"), device=device)
    where = torch.zeros(len(query), dtype=torch.long, device=device)
    query_norms = (query * query).sum(1)
    for start in range(0, len(reference), _REFERENCE_CHUNK):
        block = _flat(reference[start:start + _REFERENCE_CHUNK], device)
        squared = query_norms[:, None] + (block * block).sum(1)[None, :] - 2 * query @ block.T
        if offset is not None:
            rows = torch.arange(len(query), device=device)
            columns = rows + offset - start
            inside = (columns >= 0) & (columns < len(block))
            squared[rows[inside], columns[inside]] = float("inf")
        value, index = squared.min(1)
        better = value < best
        best = torch.where(better, value, best)
        where = torch.where(better, index + start, where)
    dims = query.shape[1]
    return where.cpu().numpy(), torch.sqrt(best.clamp(min=0) / dims).cpu().numpy()


def audit_store(synthetic: PatchStore, real: PatchStore, out_dir: str | Path, *, copy_ratio: float,
                device: torch.device | str = "cpu", batch_size: int = 256,
                featurize: Callable[[np.ndarray], np.ndarray] | None = None,
                real_features: np.ndarray | None = None, progress: bool = True) -> dict[str, Any]:
    """Audit ``synthetic`` against ``real``; write ``audit.csv``, ``audit.json`` and ``audit.png`` in ``out_dir``.

    ``featurize`` maps uint8 patches to features for the feature-space neighbour (``real_features`` may pass
    the real patches' features when already computed, in the order of ``real``'s patches). Returns the summary
    written to ``audit.json``: thresholds, per-class flagged counts and distance quantiles.
    """
    out_dir, device = Path(out_dir), torch.device(device)
    real_images = real.images()
    real_nn = np.empty(len(real))
    for start in range(0, len(real), batch_size):
        _, real_nn[start:start + batch_size] = nearest_pixels(real_images[start:start + batch_size], real_images,
                                                              device, offset=start)
    if featurize is not None and real_features is None:
        real_features = np.concatenate([featurize(real_images[i:i + batch_size])
                                        for i in range(0, len(real), batch_size)] or [np.zeros((0, 1))])
    columns = {name: [] for name in ("pixel_index", "pixel_distance", "feature_index", "feature_distance")}
    for start in progress_bar(range(0, len(synthetic), batch_size), desc="audit", unit="batch",
                              disable=not progress):
        images = synthetic.images(range(start, min(start + batch_size, len(synthetic))))
        index, distance = nearest_pixels(images, real_images, device)
        columns["pixel_index"].append(index)
        columns["pixel_distance"].append(distance)
        if featurize is not None:
            features = torch.as_tensor(featurize(images), device=device)
            squared = torch.cdist(features, torch.as_tensor(real_features, device=device))
            value, where = squared.min(1)
            columns["feature_index"].append(where.cpu().numpy())
            columns["feature_distance"].append(value.cpu().numpy())
    merged = {key: np.concatenate(value) if value else np.zeros(0) for key, value in columns.items()}
    pixel_index = merged["pixel_index"].astype(np.int64)
    neighbour = real_nn[pixel_index] if len(real) > 1 else np.full(len(pixel_index), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(neighbour > 0, merged["pixel_distance"] / neighbour,
                         np.where(merged["pixel_distance"] > 0, np.inf, 0.0))
    flagged = ratio < copy_ratio
    _write_rows(out_dir / "audit.csv", synthetic, real, merged, neighbour, ratio, flagged)
    if len(synthetic):
        order = np.argsort(ratio, kind="stable")[:SHEET_PAIRS]
        sheet = class_grid([synthetic.images(order), real_images[pixel_index[order]]],
                           ["synthetic", "nearest real"], len(order))
        write_png(sheet, out_dir / "audit.png")
    summary = {
        "copy_ratio": copy_ratio, "pixel_space": "RMS difference in 0-255 levels",
        "feature_space": "selection/audit classifier penultimate layer" if featurize is not None else None,
        "n_synthetic": int(len(synthetic)), "n_real": int(len(real)), "near_copies": int(flagged.sum()),
        "real_neighbour_distance_median": _quantile(real_nn, 0.5),
        "pixel_distance_quantiles": {q: _quantile(merged["pixel_distance"], float(q)) for q in ("0.01", "0.5")},
        "classes": {name: {"samples": int((synthetic.labels == index).sum()),
                           "near_copies": int(flagged[synthetic.labels == index].sum())}
                    for index, name in enumerate(synthetic.class_names)},
    }
    write_json_atomic(out_dir / "audit.json", summary)
    return summary


def _write_rows(path: Path, synthetic: PatchStore, real: PatchStore, merged: dict[str, np.ndarray],
                neighbour: np.ndarray, ratio: np.ndarray, flagged: np.ndarray) -> None:
    real_ids = real.manifest["patch_id"]
    latent = synthetic.manifest.get("latent_index", np.full(len(synthetic), np.nan))
    has_features = len(merged["feature_index"]) == len(synthetic)
    rows = ({"patch_id": synthetic.manifest["patch_id"][i], "label": synthetic.manifest["label"][i],
             "latent_index": "" if np.isnan(latent[i]) else int(latent[i]),
             "nearest_real_pixel": real_ids[int(merged["pixel_index"][i])],
             "pixel_distance": round(float(merged["pixel_distance"][i]), 4),
             "real_neighbour_distance": round(float(neighbour[i]), 4), "pixel_ratio": round(float(ratio[i]), 4),
             "nearest_real_feature": real_ids[int(merged["feature_index"][i])] if has_features else "",
             "feature_distance": round(float(merged["feature_distance"][i]), 4) if has_features else "",
             "near_copy": int(flagged[i])} for i in range(len(synthetic)))
    write_csv_atomic(path, AUDIT_COLUMNS, rows)


def _quantile(values: np.ndarray, q: float) -> float | None:
    finite = values[np.isfinite(values)]
    return round(float(np.quantile(finite, q)), 4) if len(finite) else None
