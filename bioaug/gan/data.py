"""Class-balanced batches of real patches, as a pure function of (seed, step, rank)."""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..errors import StoreError
from ..store import PatchStore


class ClassBalancedSampler:
    """Which labelled patches form each batch, so that minority classes are learned as well as majority ones.

    Position ``q`` of the global stream of patches (``step * batch_size + rank * local_batch + i``) takes class
    ``q mod K``, so every class fills the same share of every batch whatever its size, and the ``(q // K)``-th
    draw of that class, read from a permutation of the class reshuffled each time the class is used up
    (seeded by seed, class and class epoch). Minority patches therefore repeat more often, every patch of a
    class is seen once per class epoch, and because nothing depends on earlier batches a resumed run draws
    exactly the batches it would have drawn, on any number of ranks.
    """

    def __init__(self, labels: np.ndarray, class_names: list[str], seed: int, *, source: object = "store") -> None:
        self.members = [np.flatnonzero(labels == k) for k in range(len(class_names))]
        if not any(len(m) for m in self.members):
            raise StoreError(source, "has no labelled patches; training the conditional GAN needs class labels")
        empty = [name for name, m in zip(class_names, self.members) if not len(m)]
        if empty:
            raise StoreError(source, f"class {empty[0]!r} has no labelled patches; every class needs some")
        self.seed = seed
        self._permutation = functools.lru_cache(maxsize=4 * len(class_names))(self._make_permutation)

    def _make_permutation(self, label: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, label, epoch]).permutation(self.members[label])

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Store indices and class labels of this rank's share of the global batch at ``step``."""
        local = batch_size // world_size
        positions = step * batch_size + rank * local + np.arange(local)
        labels = positions % len(self.members)
        draws = positions // len(self.members)
        indices = np.empty(local, dtype=np.int64)
        for i, (label, draw) in enumerate(zip(labels.tolist(), draws.tolist())):
            size = len(self.members[label])
            indices[i] = self._permutation(label, draw // size)[draw % size]
        return indices, labels


def load_images(store: PatchStore, indices: np.ndarray, device: torch.device, *,
                channels_last: bool) -> torch.Tensor:
    """Patches as a float tensor in [-1, 1] of shape (N, 3, H, W) on ``device``.

    The uint8 patches travel to the device before conversion (a quarter of the bytes of float32); an NHWC
    array permuted to NCHW is already in channels-last layout, so that costs no copy.
    """
    batch = torch.from_numpy(store.images(indices)).to(device, non_blocking=True).permute(0, 3, 1, 2)
    batch = batch.float().div_(127.5).sub_(1)
    return batch.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
