"""Hinge adversarial loss.

Why hinge: with a spectrally normalised projection discriminator it is the pairing that SN-GAN, the
projection discriminator paper and BigGAN were tuned and validated with. Its margin matters most on small
data: once a real patch scores above +1 (or a fake below -1) it stops contributing, so the discriminator is
not rewarded for pushing memorised training patches ever further, which slows the overfitting that small
data invites. Scores are centred on zero, which is also what the adaptive augmentation reads
(``E[sign(D(real))]``). The non-saturating loss would need an R1 penalty for the same stability, at the cost
of a double backward pass.
"""
from __future__ import annotations

import torch


def discriminator_hinge_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """``E[max(0, 1 - D(real))] + E[max(0, 1 + D(fake))]``."""
    return torch.relu(1 - real_scores).mean() + torch.relu(1 + fake_scores).mean()


def generator_hinge_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-E[D(fake)]``: the generator raises the score of its samples without a margin."""
    return -fake_scores.mean()
