"""Synthetic patch stores from a trained GAN: sampling, balancing, selective augmentation, memorisation audit
and latent-space sheets (``bioaug augment``).

``AugmentConfig`` is importable without torch (the command line builds ``--help`` from it); everything else is
loaded on first use. ``bioaug.augment`` is both this package and the function users call
(``bioaug.augment(run, out, config)``), so the package is callable (:func:`bioaug.lazy.make_callable`).
"""
from __future__ import annotations

from ..lazy import lazy_getattr, make_callable
from .config import AugmentConfig  # noqa: F401 (re-exported)

_LAZY = {
    "augment": "bioaug.augment.pipeline",
    "Synthesizer": "bioaug.augment.synthesizer",
    "select_synthetic": "bioaug.augment.selection",
    "audit_store": "bioaug.augment.audit",
    "write_latent_sheets": "bioaug.augment.latent",
}

__all__ = sorted([*_LAZY, "AugmentConfig"])
__getattr__ = lazy_getattr(__name__, _LAZY)
make_callable(__name__, "bioaug.augment.pipeline:augment")
