"""Hinge adversarial loss, and the LeCam regulariser for the discriminator on limited data.

Why hinge: with a spectrally normalised projection discriminator it is the pairing that SN-GAN, the
projection discriminator paper and BigGAN were tuned and validated with. Its margin matters most on small
data: once a real patch scores above +1 (or a fake below -1) it stops contributing, so the discriminator is
not rewarded for pushing memorised training patches ever further, which slows the overfitting that small
data invites. Scores are centred on zero, which is also what the adaptive augmentation reads
(``E[sign(D(real))]``). The non-saturating loss would need an R1 penalty for the same stability, at the cost
of a double backward pass.
"""
from __future__ import annotations

from typing import Callable

import torch


def discriminator_hinge_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """``E[max(0, 1 - D(real))] + E[max(0, 1 + D(fake))]``."""
    return torch.relu(1 - real_scores).mean() + torch.relu(1 + fake_scores).mean()


def generator_hinge_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-E[D(fake)]``: the generator raises the score of its samples without a margin."""
    return -fake_scores.mean()


class LeCam:
    """LeCam regularisation of the discriminator (Tseng et al. 2021, "Regularizing Generative Adversarial
    Networks under Limited Data").

    Keeps scores of reals near the recent average score of fakes, and fakes near that of reals:
    ``weight * (E[relu(D(real) - a_fake)^2] + E[relu(a_real - D(fake))^2])``, with ``a_real``, ``a_fake``
    exponential moving averages of the mean scores (the one-sided form of the authors' release: only scores
    beyond the other side's anchor, the direction of overfitting, are penalised). The averages start at the
    first batch's means rather than at zero, so identical real and fake score histories give exactly zero.
    ``state`` (the two averages and the number of updates) lives on the device and in the checkpoint, so a
    resumed run continues the same averages.
    """

    def __init__(self, weight: float, decay: float, device: torch.device) -> None:
        self.weight, self.decay = weight, decay
        self.state = torch.zeros(3, device=device)

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def update(self, real_scores: torch.Tensor, fake_scores: torch.Tensor,
               all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> None:
        """Move the averages towards this batch's mean scores, taken over every rank."""
        real, fake = real_scores.detach().float(), fake_scores.detach().float()
        sums = all_reduce_sum(torch.stack([real.sum(), fake.sum(),
                                           torch.tensor(float(real.numel()), device=real.device),
                                           torch.tensor(float(fake.numel()), device=fake.device)]))
        means = sums[:2] / sums[2:]
        moved = torch.where(self.state[2] > 0, self.state[:2].lerp(means, 1 - self.decay), means)
        self.state = torch.cat([moved, self.state[2:] + 1])

    def penalty(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        """The weighted regulariser for these scores against the current averages."""
        real_anchor, fake_anchor = self.state[0], self.state[1]
        return self.weight * (torch.relu(real_scores - fake_anchor).square().mean()
                              + torch.relu(real_anchor - fake_scores).square().mean())
