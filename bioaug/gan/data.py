"""Class-balanced batches of real patches, labelled and unlabelled, as a pure function of (seed, step, rank)."""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from ..errors import StoreError
from ..store import PatchStore


class Batch(NamedTuple):
    """One rank's share of a batch: store rows, their labels, and the class to generate at each position."""

    indices: np.ndarray
    #: The row's class, or -1 for an unlabelled row (the discriminator scores it without its class term).
    labels: np.ndarray
    #: The class the generator draws the fake paired with each position: the label where there is one,
    #: otherwise a class-balanced choice.
    classes: np.ndarray


class ClassBalancedSampler:
    """Which patches form each batch, so that minority classes are learned as well as majority ones.

    Each global batch of ``B`` positions holds ``floor(B * unlabelled_fraction)`` unlabelled rows, spread
    evenly over it (none when the fraction is 0 or the store has no unlabelled rows), and labelled rows
    elsewhere. The labelled positions form one stream over the run: its ``q``-th patch takes class
    ``q mod K``, so every class fills the same share of every batch whatever its size, and is the
    ``(q // K)``-th draw of that class, read from a permutation of the class reshuffled each time the class
    is used up (seeded by seed, class and class epoch). Unlabelled positions form a second stream, read the
    same way from permutations of all unlabelled rows; the fake paired with the ``q``-th of them is of class
    ``q mod K``. Minority patches therefore repeat more often, every patch is seen once per epoch of its
    stream, and because nothing depends on earlier batches a resumed run draws exactly the batches it would
    have drawn, on any number of ranks.
    """

    def __init__(self, labels: np.ndarray, class_names: list[str], seed: int, *, source: object = "store",
                 unlabelled_fraction: float = 0.0) -> None:
        self.members = [np.flatnonzero(labels == k) for k in range(len(class_names))]
        if not any(len(m) for m in self.members):
            raise StoreError(source, "has no labelled patches; training the conditional GAN needs class labels")
        empty = [name for name, m in zip(class_names, self.members) if not len(m)]
        if empty:
            raise StoreError(source, f"class {empty[0]!r} has no labelled patches; every class needs some")
        self.unlabelled = np.flatnonzero(labels < 0) if unlabelled_fraction > 0 else np.zeros(0, np.int64)
        self.unlabelled_fraction = unlabelled_fraction if len(self.unlabelled) else 0.0
        self.seed = seed
        self._permutation = functools.lru_cache(maxsize=4 * (len(class_names) + 1))(self._make_permutation)

    def _make_permutation(self, stream: int, epoch: int) -> np.ndarray:
        """Permutation ``epoch`` of class ``stream``'s rows, or of the unlabelled rows for ``stream == K``."""
        rows = self.members[stream] if stream < len(self.members) else self.unlabelled
        return np.random.default_rng([self.seed, stream, epoch]).permutation(rows)

    def _draw(self, stream: int, draw: int) -> int:
        size = len(self.members[stream]) if stream < len(self.members) else len(self.unlabelled)
        return int(self._permutation(stream, draw // size)[draw % size])

    def unlabelled_per_batch(self, batch_size: int) -> int:
        """Unlabelled rows in every global batch of ``batch_size``."""
        return int(batch_size * self.unlabelled_fraction)

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        """This rank's share of the global batch at ``step``."""
        classes = len(self.members)
        n_unlabelled = self.unlabelled_per_batch(batch_size)
        position = np.arange(batch_size)
        unlabelled = (position + 1) * n_unlabelled // batch_size > position * n_unlabelled // batch_size
        stream = np.where(unlabelled, step * n_unlabelled + np.cumsum(unlabelled) - 1,
                          step * (batch_size - n_unlabelled) + np.cumsum(~unlabelled) - 1)
        local = batch_size // world_size
        chosen = slice(rank * local, (rank + 1) * local)
        unlabelled, stream = unlabelled[chosen], stream[chosen]
        indices = np.empty(local, dtype=np.int64)
        labels = np.where(unlabelled, -1, stream % classes)
        for i, (is_unlabelled, q) in enumerate(zip(unlabelled.tolist(), stream.tolist())):
            indices[i] = self._draw(classes, q) if is_unlabelled else self._draw(q % classes, q // classes)
        return Batch(indices, labels, stream % classes)


def load_images(store: PatchStore, indices: np.ndarray, device: torch.device, *,
                channels_last: bool) -> torch.Tensor:
    """Patches as a float tensor in [-1, 1] of shape (N, 3, H, W) on ``device``.

    The uint8 patches travel to the device before conversion (a quarter of the bytes of float32); an NHWC
    array permuted to NCHW is already in channels-last layout, so that costs no copy.
    """
    batch = torch.from_numpy(store.images(indices)).to(device, non_blocking=True).permute(0, 3, 1, 2)
    batch = batch.float().div_(127.5).sub_(1)
    return batch.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
