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


@torch.no_grad()
def generate(generator: nn.Module, labels: Sequence[int] | np.ndarray, *, seed: int,
             batch_size: int = 256) -> np.ndarray:
    """Patches of the given classes as (N, H, W, 3) uint8, one per label.

    Latents come from a CPU generator seeded with ``seed``, drawn for all labels at once, and the generator
    is used in eval mode, so patch ``i`` depends only on ``seed``, ``i`` and its label: not on the batch size
    or the device's random stream.
    """
    device = next(generator.parameters()).device
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    latents = torch.randn(len(labels), generator.z_dim, generator=torch.Generator().manual_seed(seed))
    was_training = generator.training
    generator.eval()
    try:
        chunks = [to_uint8(generator(latents[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)))
                  for i in range(0, len(labels), batch_size)]
    finally:
        generator.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, generator.patch_size, generator.patch_size, 3),
                                                          np.uint8)


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
