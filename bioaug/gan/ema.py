"""Exponential moving average of the generator's weights, the copy every sample is drawn from.

The average covers weights only. Batch-norm statistics are not weights: during training the EMA carries the
training generator's running statistics, measured on that network's activations, not its own. With
``ema_stats: standing`` a checkpoint's EMA gets statistics measured on its own outputs instead (BigGAN's
"standing statistics", Brock et al. 2019); :func:`standing_statistics` computes them.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(step: int, decay: float) -> float:
    """The decay to use after ``step`` updates: ramped up from 0 so the average is not stuck at the random init."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Move ``ema``'s parameters towards ``model``'s; copy buffers (batch-norm statistics) as they are."""
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


@torch.no_grad()
def standing_statistics(generator: nn.Module, num_classes: int, *, batches: int, batch_size: int,
                        seed: int) -> nn.Module:
    """A copy of ``generator`` (in eval mode) whose batch-norm statistics are the plain average over
    ``batches`` batches of its own activations, for latents and uniformly drawn classes from ``seed``.

    Only the batch-norm layers run in training mode, so nothing else moves: spectral norm's power iteration,
    for one, stays where training left it. ``generator`` itself is not touched.
    """
    standing = copy.deepcopy(generator).eval()
    norms = [module for module in standing.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
        norm.train()
    device = next(standing.parameters()).device
    stream = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        latents = torch.randn(batch_size, standing.z_dim, generator=stream)
        labels = torch.randint(0, num_classes, (batch_size,), generator=stream)
        standing(latents.to(device), labels.to(device))
    for norm in norms:
        norm.momentum = 0.1  # back to torch's default, as a loaded checkpoint would be
        norm.eval()
    return standing
