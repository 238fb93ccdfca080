"""Per-class diversity of generated patches relative to real ones: an early warning of mode collapse.

No perceptual network (LPIPS, Inception) can be loaded offline, so diversity is measured where collapse is
plain to see without one: the mean pairwise distance between patches average-pooled to 8x8, which keeps
colour and layout (where is the nucleus, how dark, how large) and drops pixel noise. A class whose samples
are far less diverse than its real patches has collapsed onto a few modes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

POOLED_SIZE = 8
#: Below this fraction of the real patches' diversity a class is reported as collapsing.
COLLAPSE_RATIO = 0.3
#: Steps before which low diversity is expected (samples start as near-uniform blobs) and not reported.
COLLAPSE_WARMUP = 1000


def pairwise_diversity(images: np.ndarray) -> float:
    """Mean pairwise L2 distance between uint8 patches (N, H, W, 3) pooled to 8x8 in [0, 1]; NaN if N < 2."""
    if len(images) < 2:
        return float("nan")
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, POOLED_SIZE)
    flat = pooled.flatten(1)
    distances = torch.cdist(flat, flat)
    return float(distances.sum() / (len(flat) * (len(flat) - 1)))


def diversity_ratios(fakes: list[np.ndarray], real_diversity: list[float]) -> list[float]:
    """Per class, diversity of generated patches divided by that of real ones (NaN where undefined)."""
    ratios = []
    for images, real in zip(fakes, real_diversity):
        fake = pairwise_diversity(images)
        ratios.append(fake / real if real > 0 else float("nan"))
    return ratios
