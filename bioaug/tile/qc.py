"""Quality control of a tiling run: per-slide counts, a nucleus-density check and the QC overview picture.

The density check catches what otherwise passes silently: weak haematoxylin that hides most nuclei from the
detector, or a wrong µm/px that makes every nucleus four times too large or small. Both move the number of
nuclei detected per mm² of tissue outside what tissue can hold, so a slide outside ``NUCLEI_PER_MM2`` gets one
warning line. The counts come from each shard's ``shard.json``, so a resumed run reports the same numbers.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..provenance import atomic_path
from ..store import SHARDS_DIR, PatchStore
from .planning import SlidePlan

log = logging.getLogger("bioaug")

#: Plausible nuclei per mm² of tissue. Sparse stroma or fat holds a few hundred; the densest lymphoid tissue
#: about 15,000 (nuclei 7 to 8 µm apart). Below the floor the detector is likely missing nuclei (weak
#: haematoxylin, out of focus); above the ceiling it is counting texture, or the slide's µm/px is wrong.
NUCLEI_PER_MM2 = (300.0, 30000.0)
#: Below this much tissue (mm²) a density is too noisy to judge.
MIN_DENSITY_TISSUE_MM2 = 0.01


def slide_counts(store: Path, plans: list[SlidePlan]) -> dict[str, dict[str, float]]:
    """Per slide: nuclei detected on tissue, tissue area (mm²) and patches skipped at the border, summed over
    the slide's shards."""
    counts = {}
    for plan in plans:
        total = {"detections": 0.0, "tissue_mm2": 0.0, "border_skipped": 0.0}
        for job in plan.jobs:
            meta = json.loads((store / SHARDS_DIR / job.shard / "shard.json").read_text())
            for key in total:
                total[key] += float(meta.get(key, 0))
        counts[plan.name] = total
    return counts


def check_density(counts: dict[str, dict[str, float]], mpp: float) -> dict[str, float | None]:
    """Nuclei per mm² of tissue per slide, warning once for each slide outside ``NUCLEI_PER_MM2``."""
    low, high = NUCLEI_PER_MM2
    densities: dict[str, float | None] = {}
    for name, total in counts.items():
        if total["tissue_mm2"] < MIN_DENSITY_TISSUE_MM2:
            densities[name] = None
            continue
        density = total["detections"] / total["tissue_mm2"]
        densities[name] = round(density, 1)
        if not low <= density <= high:
            reason = ("is the haematoxylin weak, or the image out of focus?" if density < low
                      else "is the slide's µm/px right?")
            log.warning("%s: %.0f nuclei detected per mm² of tissue at %g µm/px, outside the plausible %.0f to "
                        "%.0f; %s", name, density, mpp, low, high, reason)
    return densities


def report_border(counts: dict[str, dict[str, float]], max_padded: float) -> dict[str, int]:
    """Patches skipped per slide because too much of them lay outside it; one log line when any were."""
    skipped = {name: int(total["border_skipped"]) for name, total in counts.items()}
    if sum(skipped.values()):
        worst = max(skipped, key=skipped.__getitem__)
        log.info("skipped %d patches with more than %g of their area outside the slide (most on %s: %d); "
                 "--border reflect or constant keeps them", sum(skipped.values()), max_padded, worst, skipped[worst])
    return skipped


def write_qc_picture(path: Path, plan: SlidePlan, store: PatchStore) -> None:
    """The slide overview with its tissue outline (green) and patch centres coloured by class."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    picture = plan.thumbnail.copy()
    outline = find_boundaries(plan.tissue, mode="inner")
    picture[outline] = (0, 200, 0)
    rows = store.slides == plan.name
    x = np.asarray(store.manifest["x"][rows], dtype=float) * plan.tissue_scale
    y = np.asarray(store.manifest["y"][rows], dtype=float) * plan.tissue_scale
    palette = np.array([(230, 25, 75), (0, 130, 200), (255, 180, 0), (145, 30, 180), (70, 240, 240),
                        (240, 50, 230), (0, 0, 0), (128, 128, 0)], dtype=np.uint8)
    colours = palette[np.maximum(store.labels[rows], 0) % len(palette)]
    colours[store.labels[rows] < 0] = (20, 20, 20)
    height, width = picture.shape[:2]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            col = np.clip(np.round(x).astype(int) + dx, 0, width - 1)
            row = np.clip(np.round(y).astype(int) + dy, 0, height - 1)
            picture[row, col] = colours
    with atomic_path(path) as tmp:  # fast compression: a slide's fixed cost, read by people, not archived
        Image.fromarray(picture).save(tmp, format="PNG", compress_level=1)


def qc_record(counts: dict[str, dict[str, float]], densities: dict[str, float | None],
              skipped: dict[str, int]) -> dict[str, Any]:
    """The QC block of the store's provenance."""
    return {"nuclei_per_mm2": densities, "plausible_nuclei_per_mm2": list(NUCLEI_PER_MM2),
            "tissue_mm2": {name: round(total["tissue_mm2"], 4) for name, total in counts.items()},
            "border_skipped": skipped}
