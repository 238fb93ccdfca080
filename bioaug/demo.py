"""``bioaug demo``: the whole pipeline on built-in example slides, as a first run and a smoke test.

Tile, train, augment, evaluate: several procedural example slides (different seeds, so the evaluation has
slides to split by, each stained a little differently) are tiled with their annotated nuclei, and
``run_evaluation`` runs one fold with tiny settings, which trains a GAN per label budget, draws and selects synthetic patches and writes the report.
The same slides tiled without labels give the unlabelled pool. The numbers are a smoke test, not a result:
a few hundred patches, a few GAN steps, 60 classifier steps.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from .classify.config import ClassifierConfig
from .evaluate.config import EvaluateConfig
from .gan.config import TrainConfig
from .augment.config import AugmentConfig
from .example import write_example_slide
from .tile import TileConfig, tile

log = logging.getLogger("bioaug")

#: Example slide sizes in level-0 pixels at 0.25 µm/px (so tiling at 0.5 µm/px exercises the pyramid).
DEMO_SIZES = {"tiny": (1536, 1024), "small": (4096, 3072)}
#: Example slides (seeds 0, 1, ...): three folds of two slides each.
DEMO_SLIDES = 6
#: Log-normal spread of each slide's haematoxylin and eosin strengths (seeded by the slide): slides of a cohort
#: differ in stain, so colour statistics learned on some slides mislead on others while morphology holds.
DEMO_STAIN_SPREAD = 0.3


def slide_stain(seed: int) -> tuple[float, float]:
    """(haematoxylin, eosin) strength of demo slide ``seed``, drawn once from the seed."""
    haem, eosin = np.exp(DEMO_STAIN_SPREAD * np.random.default_rng([7, seed]).standard_normal(2))
    return float(haem), float(eosin)
#: The evaluation of the demo: one of three folds, two budgets, one seed, a short GAN run per budget.
DEMO_EVALUATION = EvaluateConfig(folds=3, run_folds=[0], budgets=[0.5, 1.0], seeds=[0],
                                 classifier=ClassifierConfig(steps=60, batch_size=32),
                                 generator=TrainConfig(steps=150, batch_size=32),
                                 augment=AugmentConfig(per_class=64, sheets=False))


def run_demo(out: Path, *, size: str = "tiny", workers: int = 2, progress: bool = True) -> Path:
    """Write the example slides under ``out``, tile them, evaluate; returns the report directory.

    Reruns reuse the slides and resume the store and the evaluation.
    """
    from .evaluate.protocol import run_evaluation

    width, height = DEMO_SIZES[size]
    slides, labels = [], []
    for seed in range(DEMO_SLIDES):
        slide_path = out / f"example-{size}-{seed}.tiff"
        nuclei_csv = slide_path.with_suffix(".nuclei.csv")
        if not (slide_path.is_file() and nuclei_csv.is_file()):
            log.info("writing the example slide %s (%d x %d px)", slide_path, width, height)
            haem, eosin = slide_stain(seed)
            write_example_slide(slide_path, width=width, height=height, seed=seed, progress=progress,
                                hematoxylin_strength=haem, eosin_strength=eosin)
        slides.append(slide_path)
        labels.append(str(nuclei_csv))
    store = tile(slides, out / "store", TileConfig(label_by="points", labels=labels, workers=workers),
                 progress=progress)
    log.info("tiled %d patches from %d slides into %s", len(store), len(slides), store.path)
    pool = tile(slides, out / "unlabelled", TileConfig(label_by="none", workers=workers), progress=progress)
    log.info("detected %d unlabelled nuclei for the pool in %s", len(pool), pool.path)
    config = dataclasses.replace(DEMO_EVALUATION, unlabelled=str(pool.path))
    return run_evaluation(store, out / "evaluation", config, progress=progress)
