"""One cell of the evaluation, a (fold, draw, budget): which patches train and test, where its work goes, and
what its steps share once loaded.

``Cell`` is planned once (``bioaug.evaluate.protocol.plan``) and travels to Dask workers; ``CellData`` is
loaded from it by each process that runs a step of the cell and handed to the steps that read it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..store import PatchStore

if TYPE_CHECKING:
    from torch import nn

#: Patches per forward pass when a cell's classifiers predict (test sets, the pool, synthetic patches): it
#: bounds memory, and predictions do not depend on it.
PREDICTION_BATCH = 512


@dataclass
class Cell:
    """One (fold, budget) of the protocol: which patches train and test, and where its work goes."""

    fold: int
    budget: float
    draw: int
    directory: Path
    train: np.ndarray
    """Input-store indices of the budget's training patches."""
    test: np.ndarray
    train_store: PatchStore
    test_slides: set[str]
    ready: PatchStore | None
    """A ready synthetic store from the config, used instead of training a generator."""
    pool: PatchStore | None = None
    """The cell's unlabelled pool: detected nuclei of the fold's training slides outside the budget."""
    test_hashes: set[str] = field(default_factory=set)
    """SHA-256 of the test slides' files, where the store recorded them."""

    @property
    def name(self) -> str:
        return f"fold {self.fold}, draw {self.draw}, budget {100 * self.budget:g}%"

    def allowed_generator_slides(self) -> set[str]:
        """What a generator of this cell may have seen: the budget's slides and the pool's."""
        pool = set(map(str, self.pool.slides)) if self.pool is not None else set()
        return set(map(str, self.train_store.slides)) | pool


@dataclass
class CellData:
    """What the steps of one cell read: its training and test patches, each seed's validation split, and the
    networks that later steps of the cell reuse (filled as they are trained)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    test_groups: np.ndarray
    """The group (slide or patient) of every test patch: results keep a confusion matrix per test image."""
    test_sha256: str
    """Hash of the test groups' names, in every result's key."""
    splits: dict[int, tuple[np.ndarray, np.ndarray]]
    """Per seed: positions in the training patches of those that fit the classifier and those that validate it."""
    models: dict[tuple[str, int], nn.Module] = field(default_factory=dict)
    """Trained networks by (arm, seed), of the arms whose networks later steps reuse."""


def cell_directory(work: Path, fold: int, draw: int, budget: float) -> Path:
    """``work/fold-<k>/draw-<d>/budget-<b:.2f>``: where one cell keeps its stores, generator and results."""
    return work / f"fold-{fold}" / f"draw-{draw}" / f"budget-{budget:.2f}"


def read_result(path: Path) -> dict[str, Any] | None:
    """A JSON result file of a cell, or None when it is missing or unreadable (then it is computed again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
