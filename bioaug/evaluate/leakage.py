"""Refuse generators that saw test data: a GAN for a fold must be trained on that fold's training slides only.

A synthetic arm whose generator was trained on a test slide leaks test patches into training through the
generator and inflates every metric; the check runs before any classifier is trained. A GAN run records its
training store's path and content hash, from which ``generator_training_slides`` recovers the slide names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import CheckpointError


def check_generator_leakage(generator_slides: Iterable[str], test_slides: Iterable[str], *,
                            source: str | Path) -> None:
    """Raise when any test slide is among the slides the generator at ``source`` was trained on.

    Parameters
    ----------
    generator_slides
        Slide (or image/patient) names of the generator's training patches, as its run recorded them.
    test_slides
        Names of the slides in this fold's test set.
    source
        The generator checkpoint or synthetic store, named in the error.

    Raises
    ------
    CheckpointError
        One line naming ``source`` and up to five of the leaked slides.
    """
    leaked = sorted(set(map(str, generator_slides)) & set(map(str, test_slides)))
    if leaked:
        shown = ", ".join(leaked[:5]) + (", ..." if len(leaked) > 5 else "")
        raise CheckpointError(source, f"generator was trained on {len(leaked)} test slide(s) ({shown}); train "
                                      "it on this fold's training slides only")


def check_generator_store(recorded_sha256: str, expected_sha256: str, *, source: str | Path) -> None:
    """Raise unless the generator at ``source`` was trained on exactly the expected store (by content hash)."""
    if recorded_sha256 != expected_sha256:
        raise CheckpointError(source, f"generator was trained on store {recorded_sha256[:12] or '(unrecorded)'}, "
                                      f"not this fold's training store {expected_sha256[:12]}")


def generator_training_slides(store_path: str | Path, recorded_sha256: str, *, source: str | Path) -> set[str]:
    """Slide names in the store a generator run recorded (path and content hash), after checking the hash.

    The GAN run directory's ``config.json`` holds the training store's path and content hash; the store must
    still hold exactly those patches, or the slide list would not describe what the generator saw.
    """
    from ..store import PatchStore

    store = PatchStore(store_path)
    check_generator_store(recorded_sha256, store.content_hash, source=source)
    return set(map(str, store.slides))
