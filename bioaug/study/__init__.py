"""The "which of these are real?" reader study: a self-contained page for pathologists and its scoring.

``make(real, synthetic, out)`` writes ``out/study.html`` (patches only, ids that say nothing) and
``out/key.json`` (the answers and the study's provenance); ``score(out, answer_files)`` scores the CSV files
readers download from the page. Names load on first use, so ``import bioaug`` stays light.
"""
from __future__ import annotations

from ..lazy import lazy_getattr
from .config import StudyConfig  # noqa: F401 (re-exported)

_LAZY = {
    "make": "bioaug.study.page",
    "score": "bioaug.study.scoring",
    "score_answers": "bioaug.study.scoring",
    "fleiss_kappa": "bioaug.study.scoring",
    "read_answers": "bioaug.study.answers",
    "read_key": "bioaug.study.key",
    "StudyError": "bioaug.study.key",
}

__all__ = sorted([*_LAZY, "StudyConfig"])
__getattr__ = lazy_getattr(__name__, _LAZY)
