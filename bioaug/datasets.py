"""``torch`` datasets over patch stores, usable in plain PyTorch and MONAI training loops."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .store import PatchStore


class PatchDataset(Dataset):
    """Patches of a store as MONAI-style dictionaries.

    Each item is ``{"image": float32 tensor (3, H, W) in [0, 1], "label": int64 tensor, "index": int}``; the
    label is -1 for unlabelled patches. ``transform`` receives and returns that dictionary (MONAI dictionary
    transforms fit directly).
    """

    def __init__(self, store: PatchStore | str | Path, indices: Sequence[int] | None = None,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.store = store if isinstance(store, PatchStore) else PatchStore(store)
        self.indices = np.arange(len(self.store)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, Any]:
        index = int(self.indices[item])
        image = torch.from_numpy(self.store.image(index)).permute(2, 0, 1).float().div_(255.0)
        sample = {"image": image, "label": torch.tensor(self.store.labels[index]), "index": index}
        return self.transform(sample) if self.transform else sample
