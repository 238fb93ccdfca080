"""Differentiable augmentation of every image the discriminator sees, with an adaptive probability.

On a few hundred patches the discriminator memorises the training set and stops teaching the generator.
Augmenting reals and fakes alike, differentiably so the generator is trained through the augmentation
(Zhao et al. 2020, DiffAugment; Karras et al. 2020, ADA), widens what the discriminator must explain without
changing what the generator must produce. Each operation is applied to each image independently with
probability ``p``; :class:`AdaController` raises ``p`` while the discriminator is overconfident on reals
and lowers it otherwise, as ADA does.

Images are tensors in [-1, 1] of shape (N, 3, H, W). Every operation draws its random parameters from the
global torch generator on the images' device, so a run is reproducible from its seed and RNG states.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..registry import load_target
from .config import DIFF_AUGMENTATIONS, TrainConfig

#: Optical densities of haematoxylin, eosin and DAB (Ruifrok & Johnston 2001), the matrix
#: ``skimage.color.rgb2hed`` inverts: optical density (row) = stain concentrations (row) @ this.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
#: Stain jitter as in Tellez et al. 2018: concentrations scaled by 1 ± 0.1 and shifted by ± 0.05 per image.
STAIN_SCALE, STAIN_SHIFT = 0.1, 0.05
_TRANSLATION_FRACTION = 1 / 8
_CUTOUT_FRACTION = 1 / 2


def _chosen(images: torch.Tensor, p: float) -> torch.Tensor:
    """A (N, 1, 1, 1) mask of the images an operation applies to, each with probability ``p``."""
    return torch.rand(len(images), 1, 1, 1, device=images.device) < p


def _uniform(images: torch.Tensor, *shape: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(len(images), *shape, device=images.device, dtype=images.dtype)


def stain(images: torch.Tensor, p: float) -> torch.Tensor:
    """H&E stain jitter: scale and shift each stain's concentration in optical-density space.

    This varies staining intensity the way slides from different labs and batches differ, which colour
    jitter in RGB cannot do without producing colours no stain mixture gives.
    """
    rgb = ((images + 1) / 2).clamp(min=1e-6)
    concentrations = torch.einsum("nchw,cd->ndhw", -torch.log(rgb), HED_FROM_RGB.to(images.device, images.dtype))
    scale = _uniform(images, 3, 1, 1, low=1 - STAIN_SCALE, high=1 + STAIN_SCALE)
    shift = _uniform(images, 3, 1, 1, low=-STAIN_SHIFT, high=STAIN_SHIFT)
    density = torch.einsum("nchw,cd->ndhw", concentrations * scale + shift,
                           RGB_FROM_HED.to(images.device, images.dtype))
    jittered = torch.exp(-density).clamp(0, 1) * 2 - 1
    return torch.where(_chosen(images, p), jittered, images)


def color(images: torch.Tensor, p: float) -> torch.Tensor:
    """Brightness, saturation and contrast, each applied with probability ``p``."""
    brightness = images + _uniform(images, 1, 1, 1, low=-0.2, high=0.2)
    images = torch.where(_chosen(images, p), brightness, images)
    grey = images.mean(dim=1, keepdim=True)
    saturation = (images - grey) * _uniform(images, 1, 1, 1, low=0.5, high=1.5) + grey
    images = torch.where(_chosen(images, p), saturation, images)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (images - mean) * _uniform(images, 1, 1, 1, low=0.7, high=1.3) + mean
    return torch.where(_chosen(images, p), contrast, images)


def translation(images: torch.Tensor, p: float) -> torch.Tensor:
    """Whole-pixel shifts of up to 1/8 of the patch, filled by reflection so no artificial border appears."""
    n, _, height, width = images.shape
    limit = max(1, int(height * _TRANSLATION_FRACTION))
    shift = torch.randint(-limit, limit + 1, (n, 2), device=images.device).to(images.dtype)
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = 2 * shift[:, 0] / width
    theta[:, 1, 2] = 2 * shift[:, 1] / height
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    shifted = F.grid_sample(images, grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return torch.where(_chosen(images, p), shifted, images)


def cutout(images: torch.Tensor, p: float) -> torch.Tensor:
    """Set a square of half the patch side, centred anywhere in the patch, to mid-grey."""
    n, _, height, width = images.shape
    side = int(height * _CUTOUT_FRACTION)
    corner = torch.randint(0, height, (n, 2), device=images.device) - side // 2
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    inside_rows = (rows >= corner[:, :1]) & (rows < corner[:, :1] + side)
    inside_cols = (cols >= corner[:, 1:]) & (cols < corner[:, 1:] + side)
    box = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]
    return torch.where(_chosen(images, p) & box, torch.zeros_like(images), images)


def diffaugment(images: torch.Tensor, p: float, operations: Sequence[str]) -> torch.Tensor:
    """Apply the named operations (of ``DIFF_AUGMENTATIONS``, in its order), each to each image with probability
    ``p``; ``p == 0`` returns ``images``.

    Runs in float32 even inside a bf16 autocast region: the stain model's logarithms and exponentials, and
    whole-pixel shifts, need the precision, and cost little next to the networks.
    """
    if p <= 0:
        return images
    with torch.autocast(images.device.type, enabled=False):
        images = images.float()
        for name, target in DIFF_AUGMENTATIONS.items():
            if name in operations:
                images = load_target(target)(images, p)
    return images


class AdaController:
    """The augmentation probability ``p``: fixed, or adapted to discriminator overfitting as ADA does.

    The overfitting signal is ``r_t = E[sign(D(real))]`` over the last ``ada_interval`` steps: 0 when the
    discriminator cannot tell training reals from fakes, 1 when it is sure of every real. Every interval,
    ``p`` moves by a fixed amount towards keeping ``r_t`` at ``ada_target``, so it can cross [0, 1] in
    ``ada_kimg`` thousand real images. Sums stay on the device so observing never waits for the GPU.
    """

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.p = config.diffaugment_p
        self.adaptive = config.ada
        self.target = config.ada_target
        self.interval = config.ada_interval
        self.step_size = config.batch_size * config.ada_interval / (config.ada_kimg * 1000)
        self.sums = torch.zeros(2, device=device)
        self.last_rt: float | None = None

    def observe(self, real_scores: torch.Tensor) -> None:
        """Accumulate the signs of the discriminator's scores on (augmented) reals."""
        if self.adaptive:
            self.sums[0] += torch.sign(real_scores.detach().float()).sum()
            self.sums[1] += real_scores.numel()

    def adjust(self, all_reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Update ``p`` from the signs summed over every rank since the last adjustment."""
        if not self.adaptive:
            return
        signs, count = all_reduce(self.sums.clone()).tolist()
        self.sums.zero_()
        if count:
            self.last_rt = signs / count
            direction = (self.last_rt > self.target) - (self.last_rt < self.target)
            self.p = min(max(self.p + direction * self.step_size, 0.0), 1.0)
