"""Small writers and tallies shared by generation, selection and the audit."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..provenance import atomic_path


def write_csv_atomic(path: str | Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV under a temporary name beside ``path`` and rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def class_tally(class_names: Sequence[str], labels: np.ndarray, reasons: np.ndarray | None = None
                ) -> dict[str, dict[str, Any]]:
    """Per class: how many samples were generated and kept, and how many were rejected for each reason.

    ``reasons`` holds ``"kept"`` or a rejection reason per sample; None means every sample was kept.
    """
    tally: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(class_names):
        mine = labels == index
        if reasons is None:
            tally[name] = {"generated": int(mine.sum()), "kept": int(mine.sum()), "rejected": {}}
            continue
        values, counts = np.unique(reasons[mine], return_counts=True)
        found = dict(zip(values.tolist(), counts.tolist()))
        tally[name] = {"generated": int(mine.sum()), "kept": int(found.pop("kept", 0)),
                       "rejected": {reason: int(count) for reason, count in sorted(found.items())}}
    return tally
