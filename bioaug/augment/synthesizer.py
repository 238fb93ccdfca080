"""``Synthesizer``: the EMA generator of a GAN run, with latents that are a pure function of (seed, index).

Latent ``i`` for a seed comes from block ``i // LATENT_BLOCK`` of a numpy generator seeded with
``(seed, block)``. Any range of indices can therefore be drawn without drawing the ones before it, which lets
``augment`` stream millions of samples in bounded memory and resume at any shard, and sample ``i`` is the same
whatever the batch size or shard size: the generator always runs on the same fixed chunks of latent
indices (``bioaug.gan.sampling.run_in_chunks``). (``bioaug.gan.generate``, used for training grids, draws all
latents of a call at once instead; the two streams differ.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..devices import resolve_device
from ..errors import CheckpointError
from ..gan.run import RunDirectory
from ..gan.sampling import load_generator, run_in_chunks
from ..provenance import sha256_file

LATENT_BLOCK = 1024


class Synthesizer:
    """Draws class-conditional patches from a checkpoint's EMA generator.

    Build with :meth:`from_checkpoint`. ``sample(labels, seed)`` gives one (H, W, 3) uint8 patch per label;
    :meth:`latents`, :meth:`decode` and :meth:`decode_mixed` expose the latent space for walks, class
    interpolation and latent arithmetic.
    """

    def __init__(self, generator: torch.nn.Module, meta: dict[str, Any], checkpoint: Path,
                 checkpoint_sha256: str) -> None:
        self.generator = generator
        self.meta = meta
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = checkpoint_sha256
        self.device = next(generator.parameters()).device

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> "Synthesizer":
        """Load ``path`` (a checkpoint file, or a run directory holding ``checkpoint.pt``) onto ``device``.

        Raises ``CheckpointError`` for a missing or damaged checkpoint.
        """
        checkpoint = RunDirectory.of(path).checkpoint
        generator, meta = load_generator(checkpoint, resolve_device(device))
        return cls(generator, meta, checkpoint, sha256_file(checkpoint))

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def patch_size(self) -> int:
        return int(self.meta["patch_size"])

    @property
    def path(self) -> Path:
        """The checkpoint, which names the generator in messages (as a store's path names the store)."""
        return self.checkpoint

    @property
    def mpp(self) -> None:
        """Not known: a generator's patches take the µm/px of the store they join."""
        return None

    @property
    def z_dim(self) -> int:
        return int(self.generator.z_dim)

    def latents(self, indices: Sequence[int] | np.ndarray, seed: int) -> np.ndarray:
        """Latents (N, z_dim) float32 of the given latent indices for ``seed``; see the module docstring."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.z_dim), np.float32)
        blocks = indices // LATENT_BLOCK
        for block in np.unique(blocks):
            chosen = blocks == block
            values = np.random.default_rng([seed, int(block)]).standard_normal((LATENT_BLOCK, self.z_dim),
                                                                               dtype=np.float32)
            out[chosen] = values[indices[chosen] % LATENT_BLOCK]
        return out

    def _class_conditions(self, weights: np.ndarray) -> torch.Tensor:
        """Class embeddings mixed by ``weights`` (N, n_classes): one-hot rows give the plain embeddings."""
        table = self.generator.embed.weight
        return torch.as_tensor(np.asarray(weights, np.float32), device=self.device) @ table

    def decode_mixed(self, z: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
        """Patches for latents ``z`` conditioned on mixtures of class embeddings ``class_weights`` (N, K).

        The generator is run as usual with its embedding layer's output replaced by the mixture, so no
        network code is duplicated here; one-hot weights reproduce :meth:`decode` exactly.
        """
        z = torch.from_numpy(np.asarray(z, np.float32))
        with torch.no_grad():
            conditions = self._class_conditions(class_weights).cpu()
        return run_in_chunks(self.generator, z, torch.zeros(len(z), dtype=torch.long), conditions=conditions)

    def decode(self, z: np.ndarray, labels: Sequence[int] | np.ndarray, *, first: int = 0) -> np.ndarray:
        """Patches (N, H, W, 3) uint8 for latents ``z`` (N, z_dim) and class indices ``labels``.

        ``first`` is the latent index of row 0; it places each patch in the generator's fixed chunks
        (:func:`~bioaug.gan.sampling.run_in_chunks`), so a patch is the same however its indices are split.
        """
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise CheckpointError(self.checkpoint, f"class index out of range for {len(self.class_names)} classes")
        return run_in_chunks(self.generator, torch.from_numpy(np.asarray(z, np.float32)), torch.from_numpy(labels),
                             first=first)

    def sample(self, labels: Sequence[int] | np.ndarray, seed: int, truncation: float | None = None, *,
               start: int = 0) -> np.ndarray:
        """One patch per label, using latent indices ``start, start + 1, ...`` of ``seed``.

        ``truncation`` psi scales latents towards their mean (zero): the truncation trick of a generator
        without a mapping network, trading diversity for typicality.
        """
        z = self.latents(np.arange(start, start + len(labels)), seed)
        if truncation is not None:
            z = z * np.float32(truncation)
        return self.decode(z, labels, first=start)
