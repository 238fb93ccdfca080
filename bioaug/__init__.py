"""bioaug: synthetic histology for small, imbalanced pathology training sets.

Stages are library functions first (``bioaug.tile``, ...); the ``bioaug`` command is a thin layer over them.
Heavy modules (torch, OpenSlide) are imported only when a function that needs them is used, so
``import bioaug`` stays light.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

from .lazy import lazy_getattr

# albumentations otherwise asks the package index for updates on import; bioaug never touches the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

# public name -> module that defines it; resolved on first access
_LAZY = {
    "tile": "bioaug.tile",
    "TileConfig": "bioaug.tile",
    "PatchStore": "bioaug.store",
    "PatchDataset": "bioaug.datasets",
    "open_slide": "bioaug.slides",
    "detect_nuclei": "bioaug.nuclei",
    "write_example_slide": "bioaug.example",
    "BioaugError": "bioaug.errors",
    "train": "bioaug.gan",
    "TrainConfig": "bioaug.gan",
    "augment": "bioaug.augment",
    "AugmentConfig": "bioaug.augment",
    "Synthesizer": "bioaug.augment",
    "MixedPatchDataset": "bioaug.datasets",
    "run_evaluation": "bioaug.evaluate",
    "EvaluateConfig": "bioaug.evaluate",
}

# subpackages used through their own namespace (``bioaug.study.make``), imported on first access
_SUBPACKAGES = ("study",)

__all__ = sorted([*_LAZY, *_SUBPACKAGES])
_lazy_export = lazy_getattr(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    return _lazy_export(name)
