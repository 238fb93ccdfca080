"""``torch`` datasets over patch stores, usable in plain PyTorch and MONAI training loops."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .store import PatchStore, check_compatible


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


class MixedPatchDataset(Dataset):
    """Real and synthetic patches mixed at a fixed fraction, drawn on the fly, for any training loop.

    An epoch has ``length`` items (default: enough for every real patch to appear once, ``ceil(n_real /
    (1 - synthetic_fraction))``), of which exactly ``round(length * synthetic_fraction)`` are synthetic, at
    positions and with patches chosen by permutations seeded with ``(seed, epoch)``. Item ``i`` therefore
    depends only on ``seed``, the epoch (:meth:`set_epoch`) and ``i``, so DataLoader workers agree and runs
    repeat. Patches are cycled when a store has fewer than its share. Items are ``PatchDataset`` items plus
    ``"synthetic"`` (0 or 1); ``index`` is the row in the store the item came from.
    """

    def __init__(self, real: PatchStore | str | Path, synthetic: PatchStore | str | Path, synthetic_fraction: float,
                 length: int | None = None, seed: int = 0,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        from .errors import ConfigError, StoreError

        self.real = PatchDataset(real, transform=transform)
        self.synthetic = PatchDataset(synthetic, transform=transform)
        check_compatible(self.synthetic.store, self.real.store)
        if not 0 <= synthetic_fraction <= 1:
            raise ConfigError("synthetic_fraction", f"must lie in [0, 1], got {synthetic_fraction}")
        if length is None:
            length = (len(self.synthetic) if synthetic_fraction == 1
                      else int(np.ceil(len(self.real) / (1 - synthetic_fraction))))
        self.length, self.seed, self.synthetic_fraction = int(length), seed, synthetic_fraction
        self.n_synthetic = int(round(self.length * synthetic_fraction))
        for name, part, needed in (("real", self.real, self.length - self.n_synthetic),
                                   ("synthetic", self.synthetic, self.n_synthetic)):
            if needed and not len(part):
                raise StoreError(part.store.path, f"the {name} store is empty but {needed} items need it")
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the mix of ``epoch``: which positions are synthetic and which patch each position shows."""
        rng = np.random.default_rng([self.seed, epoch])
        self._is_synthetic = rng.permutation(self.length) < self.n_synthetic
        self._rank = np.zeros(self.length, dtype=np.int64)  # position among items of the same source
        for flag in (False, True):
            chosen = self._is_synthetic == flag
            self._rank[chosen] = np.arange(chosen.sum())
        self._order = {False: rng.permutation(len(self.real)), True: rng.permutation(len(self.synthetic))}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int) -> dict[str, Any]:
        synthetic = bool(self._is_synthetic[item])
        order = self._order[synthetic]
        sample = (self.synthetic if synthetic else self.real)[int(order[self._rank[item] % len(order)])]
        return {**sample, "synthetic": int(synthetic)}
