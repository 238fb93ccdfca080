"""The class-conditional GAN: ``train`` a run directory from a patch store, then sample its EMA generator.

``TrainConfig`` is importable without torch (the command line builds ``--help`` from it); everything else is
loaded on first use.
"""
from __future__ import annotations

from ..lazy import lazy_getattr
from .config import TrainConfig  # noqa: F401 (re-exported)
from .presets import PRESETS, SIZE_DEFAULTS, Preset, register_preset  # noqa: F401 (re-exported)

_LAZY = {
    "train": "bioaug.gan.trainer",
    "load_checkpoint": "bioaug.gan.checkpoint",
    "load_generator": "bioaug.gan.sampling",
    "generate": "bioaug.gan.sampling",
    "RunDirectory": "bioaug.gan.run",
}

__all__ = sorted([*_LAZY, "PRESETS", "Preset", "SIZE_DEFAULTS", "TrainConfig", "register_preset"])
__getattr__ = lazy_getattr(__name__, _LAZY)
