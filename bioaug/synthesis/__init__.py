"""Synthetic patch stores from a trained GAN: sampling, balancing, selective augmentation, memorisation audit
and latent-space sheets (``bioaug augment``).

``AugmentConfig`` is importable without torch (the command line builds ``--help`` from it); everything else is
loaded on first use.
"""
from __future__ import annotations

from ..lazy import lazy_getattr
from .config import AugmentConfig  # noqa: F401 (re-exported)

_LAZY = {
    "augment": "bioaug.synthesis.pipeline",
    "Synthesizer": "bioaug.synthesis.synthesizer",
    "select_synthetic": "bioaug.synthesis.selection",
    "audit_store": "bioaug.synthesis.audit",
    "write_latent_sheets": "bioaug.synthesis.latent",
}

__all__ = sorted([*_LAZY, "AugmentConfig"])
__getattr__ = lazy_getattr(__name__, _LAZY)
