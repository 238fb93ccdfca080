"""Latent-space sheets: what the generator learned, shown as PNG grids with one labelled row each.

``walks.png``            per class, a spherical walk between two latents (smooth change = no memorised modes)
``class_interpolation.png``  one fixed latent while the class embedding moves from one class to the next
``arithmetic.png``       latent arithmetic on an attribute measured on generated samples: per class, the mean
                         latent of the darkest-nuclei quarter minus that of the palest quarter (by mean
                         haematoxylin, colour deconvolution), subtracted from and added to new latents

Sheets use untruncated latents of their own seed stream (``seed + SHEET_SEED_OFFSET``), so they never share
latents with the samples in the store.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..gan.grids import class_grid, write_png
from .synthesizer import Synthesizer

SHEET_SEED_OFFSET = 7919
ARITHMETIC_SAMPLES = 64


def slerp(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` latents on the great circle from ``a`` to ``b`` (Gaussian latents live near a sphere)."""
    t = np.linspace(0, 1, steps)[:, None]
    cos = np.clip(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)), -1, 1)
    omega = np.arccos(cos)
    if omega < 1e-6:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def mean_haematoxylin(images: np.ndarray) -> np.ndarray:
    """Mean haematoxylin optical density of each (N, H, W, 3) uint8 patch (higher = darker nuclei)."""
    from skimage.color import rgb2hed

    return rgb2hed(images.astype(np.float64) / 255.0)[..., 0].reshape(len(images), -1).mean(1)


def write_latent_sheets(synth: Synthesizer, classes: Sequence[int], out_dir: str | Path, *, seed: int,
                        columns: int = 8) -> dict[str, Any]:
    """Write the three sheets for the class indices ``classes`` into ``out_dir``; return what they measured.

    The returned dict names the files and, for latent arithmetic, each class's mean haematoxylin of the
    base, minus-direction and plus-direction rows: if the direction captures the attribute, it orders them.
    """
    out_dir, names, seed = Path(out_dir), synth.class_names, seed + SHEET_SEED_OFFSET
    pair = synth.latents([0, 1], seed)
    walk = slerp(pair[0], pair[1], columns)
    rows = [synth.decode(walk, np.full(columns, label)) for label in classes]
    write_png(class_grid(rows, [names[c] for c in classes], columns), out_dir / "walks.png")
    summary: dict[str, Any] = {"walks": "walks.png"}

    pairs = [(a, b) for a, b in zip(classes, classes[1:])] or [(classes[0], c) for c in range(len(names))
                                                                 if c != classes[0]][:1]
    if pairs:
        weights = np.linspace(1, 0, columns)
        rows = []
        for a, b in pairs:
            mix = np.zeros((columns, len(names)), np.float32)
            mix[:, a], mix[:, b] = weights, 1 - weights
            rows.append(synth.decode_mixed(np.repeat(pair[:1], columns, axis=0), mix))
        write_png(class_grid(rows, [f"{names[a]} > {names[b]}" for a, b in pairs], columns),
                  out_dir / "class_interpolation.png")
        summary["class_interpolation"] = "class_interpolation.png"

    probe = synth.latents(np.arange(ARITHMETIC_SAMPLES), seed + 1)
    base = synth.latents(np.arange(ARITHMETIC_SAMPLES, ARITHMETIC_SAMPLES + columns), seed + 1)
    quarter = ARITHMETIC_SAMPLES // 4
    rows, labels, measured = [], [], {}
    for label in classes:
        darkness = mean_haematoxylin(synth.decode(probe, np.full(ARITHMETIC_SAMPLES, label)))
        order = np.argsort(darkness)
        direction = probe[order[-quarter:]].mean(0) - probe[order[:quarter]].mean(0)
        triple = [synth.decode(base + sign * direction, np.full(columns, label)) for sign in (-1, 0, 1)]
        rows.extend(triple)
        labels.extend([f"{names[label]} -dark", names[label], f"{names[label]} +dark"])
        measured[names[label]] = {key: round(float(mean_haematoxylin(images).mean()), 5)
                                  for key, images in zip(("minus", "base", "plus"), triple)}
    write_png(class_grid(rows, labels, columns), out_dir / "arithmetic.png")
    summary.update({"arithmetic": "arithmetic.png", "arithmetic_haematoxylin": measured,
                    "arithmetic_attribute": "mean haematoxylin, darkest minus palest quarter of "
                                            f"{ARITHMETIC_SAMPLES} samples per class"})
    return summary
