"""Drawing patches from a trained generator: the EMA generator of a checkpoint, fixed-seed latents."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..config import build_config
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .networks import build_generator


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1], (N, 3, H, W), as (N, H, W, 3) uint8 patches like a store holds."""
    scaled = ((images.detach().float() + 1) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


GENERATOR_CHUNK = 32
"""Rows in every forward pass of a generator that is sampled. CPU kernels choose their code path, and so their
rounding, by batch shape (and a row's place in it); one fixed shape with each patch at a fixed row makes a patch
independent of how many patches are asked for at once, to the last grey level."""


@torch.no_grad()
def run_in_chunks(generator: nn.Module, latents: torch.Tensor, labels: torch.Tensor, *, first: int = 0,
                  conditions: torch.Tensor | None = None) -> np.ndarray:
    """``generator(latents, labels)`` as (N, H, W, 3) uint8, run on chunks of exactly ``GENERATOR_CHUNK`` rows.

    Row ``j`` is patch number ``first + j`` and always sits at row ``(first + j) % GENERATOR_CHUNK`` of its
    chunk; the rows around it are zero padding where the call has none. ``conditions`` (N, z_dim), when given,
    replace the class embeddings of ``labels`` (mixtures of classes). Runs in eval mode.
    """
    count = len(latents)
    if not count:
        return np.zeros((0, generator.patch_size, generator.patch_size, 3), np.uint8)
    device = next(generator.parameters()).device
    front = first % GENERATOR_CHUNK
    total = -(-(front + count) // GENERATOR_CHUNK) * GENERATOR_CHUNK
    inputs = [latents.float(), labels.long(), *([] if conditions is None else [conditions.float()])]
    padded = [torch.cat([x.new_zeros((front, *x.shape[1:])), x, x.new_zeros((total - front - count, *x.shape[1:]))])
              for x in inputs]
    was_training = generator.training
    generator.eval()
    chunks = []
    try:
        for start in range(0, total, GENERATOR_CHUNK):
            z, y, *mixed = (x[start:start + GENERATOR_CHUNK].to(device) for x in padded)
            hook = (generator.embed.register_forward_hook(lambda _m, _i, _o, condition=mixed[0]: condition)
                    if mixed else None)
            try:
                chunks.append(to_uint8(generator(z, y)))
            finally:
                if hook is not None:
                    hook.remove()
    finally:
        generator.train(was_training)
    return np.concatenate(chunks)[front:front + count]


def generate(generator: nn.Module, labels: Sequence[int] | np.ndarray, *, seed: int) -> np.ndarray:
    """Patches of the given classes as (N, H, W, 3) uint8, one per label.

    Latents come from a CPU generator seeded with ``seed``, drawn for all labels at once, and the network runs
    in eval mode on fixed chunks (:func:`run_in_chunks`), so patch ``i`` of a call depends only on ``seed``, the
    labels and ``i``: not on how the network batches them or on the device's random stream.
    """
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    latents = torch.randn(len(labels), generator.z_dim, generator=torch.Generator().manual_seed(seed))
    return run_in_chunks(generator, latents, labels)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The EMA generator of a checkpoint (the preset its config names), in eval mode on ``device``, and what
    it was trained on.

    ``meta`` holds ``class_names``, ``patch_size``, ``step``, ``store_sha256`` and the resolved ``config``
    (a dict). Raises ``CheckpointError`` for a missing or damaged file.
    """
    state = load_checkpoint(path)
    config = build_config(TrainConfig, state["config"], source=path)
    generator = build_generator(config, len(state["class_names"]), state["patch_size"])
    generator.load_state_dict(state["generator_ema"])
    meta = {key: state[key] for key in ("class_names", "patch_size", "step", "store_sha256", "config")}
    return generator.to(device).eval().requires_grad_(False), meta
