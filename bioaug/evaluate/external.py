"""External validation: every trained classifier also tested on another cohort's patch store.

An external store is only ever predicted on: never trained on, never selected against, never pseudo-labelled,
never shown to a generator. Before anything runs it must match the training store's patch size and µm/px,
name only classes of the training store (directly or through ``external_classes``), and share no slide with
the labelled store or the unlabelled pool, by name or by the SHA-256 of the slide file both stores recorded.
Predictions are cached per classifier, so adding an external store to a finished evaluation only predicts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..store import PatchStore, check_compatible
from .pool import slide_hashes


@dataclass
class ExternalSet:
    """One external test store, its labelled rows mapped onto the training store's class indices."""

    name: str
    store: PatchStore
    rows: np.ndarray
    """Store indices of the labelled patches tested (unlabelled rows are left out)."""
    labels: np.ndarray
    """Training-store class index of every tested patch."""
    groups: np.ndarray
    """Slide (image) of every tested patch: the unit the confidence intervals resample."""
    present: list[int]
    """Training classes with at least one external patch; metrics average over these only."""
    leakage: dict[str, object]

    def images(self) -> np.ndarray:
        return self.store.images(self.rows)


def open_external(name: str, path: str | Path, store: PatchStore, pool: PatchStore | None,
                  class_map: dict[str, str]) -> ExternalSet:
    """Open and check external store ``name`` at ``path`` against the training ``store`` and ``pool``.

    Raises
    ------
    StoreError
        Another patch size or µm/px (:func:`~bioaug.store.check_compatible`).
    ConfigError
        One line naming the external store: a class that is not a training class and not mapped to one; no
        labelled patches; a slide shared with the labelled store or the pool (by name or by file content).
    """
    source = f"external {name}"
    external = PatchStore(path)  # EvaluateConfig.validate has checked that a store is there
    external.verify(progress=False)
    check_compatible(external, store, classes=False)
    index = {class_name: k for k, class_name in enumerate(store.class_names)}
    mapped = {}
    for class_name in external.class_names:
        target = class_map.get(class_name, class_name)
        if target not in index:
            raise ConfigError(source, f"class {class_name!r} of {path} is not a training class "
                                      f"({', '.join(store.class_names)}); map it with external_classes")
        mapped[class_name] = index[target]
    rows = np.flatnonzero(external.labels >= 0)
    if not len(rows):
        raise ConfigError(source, f"{path} has no labelled patches to test on")
    labels = np.asarray([mapped[external.class_names[k]] for k in external.labels[rows]], dtype=np.int64)
    leakage = _check_no_shared_slides(source, external, {"labelled store": store, "unlabelled pool": pool})
    return ExternalSet(name, external, rows, labels, np.asarray(external.slides[rows], dtype=str),
                       sorted(set(labels.tolist())), leakage)


def _check_no_shared_slides(source: str, external: PatchStore, others: dict[str, PatchStore | None]
                            ) -> dict[str, object]:
    """Refuse an external store sharing a slide with any of ``others``; the proof, as a report row."""
    names, hashes = set(map(str, external.slides)), slide_hashes(external)
    record: dict[str, object] = {"store": external.content_hash[:12], "slides": len(names),
                                 "slides with file hashes": sum(name in hashes for name in names)}
    for what, other in others.items():
        if other is None:
            continue
        other_hashes = slide_hashes(other)
        by_name = sorted(names & set(map(str, other.slides)))
        by_content = sorted(name for name in names if hashes.get(name) in set(other_hashes.values()))
        if by_name or by_content:
            shown = ", ".join((by_name + by_content)[:3])
            raise ConfigError(source, f"{external.path} shares slide(s) with the {what} ({shown}); an external "
                                      "test set must come from other slides")
        record[f"shared with {what}"] = 0
    return record
