"""The class-conditional GAN: ``train`` a run directory from a patch store, then sample its EMA generator.

``TrainConfig`` is importable without torch (the command line builds ``--help`` from it); everything else is
loaded on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from .config import SIZE_DEFAULTS, TrainConfig

_LAZY = {
    "train": "bioaug.gan.trainer",
    "load_checkpoint": "bioaug.gan.checkpoint",
    "load_generator": "bioaug.gan.sampling",
    "generate": "bioaug.gan.sampling",
}

__all__ = sorted([*_LAZY, "SIZE_DEFAULTS", "TrainConfig"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bioaug.gan' has no attribute {name!r}")
