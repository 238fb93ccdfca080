"""The ``resnet`` preset: residual generator and projection discriminator of the SNGAN/BigGAN family.

Generator (Miyato et al. 2018; Brock et al. 2019): from a 4x4 base, one residual block per doubling of
resolution, each ``CBN-ReLU-up-conv3-CBN-ReLU-conv3`` with an upsampled 1x1 shortcut. Every conditional batch
norm takes the class embedding concatenated with the whole latent (BigGAN's skip-z without the split), so the
latent shapes every scale, not only the base. Spectral norm on every weight but the class embedding, as in
BigGAN, where it steadies the generator too.

Discriminator (SNGAN's CIFAR and ImageNet networks): residual blocks ``ReLU-conv3-ReLU-conv3-avgpool`` with a
pooled 1x1 shortcut, halving the resolution down to 4x4, one more block there, ReLU and sum pooling to
``phi(x)``, then the projection head shared with the plain preset (:func:`bioaug.gan.networks.project`).
Channels follow :func:`bioaug.gan.networks.stage_channels` exactly as the plain preset's do, so the two differ
in depth and shortcuts, not in width.

Pooling and 1x1 convolutions commute (both are linear), so every shortcut pools or upsamples on the side with
fewer pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .networks import ConditionalBatchNorm2d, project, stage_channels


def _conv(in_channels: int, out_channels: int, kernel: int) -> nn.Module:
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class GeneratorBlock(nn.Module):
    """A residual block that doubles the resolution, with class- and latent-conditional batch norm."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int) -> None:
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(in_channels, condition_dim)
        self.conv1 = _conv(in_channels, out_channels, 3)
        self.norm2 = ConditionalBatchNorm2d(out_channels, condition_dim)
        self.conv2 = _conv(out_channels, out_channels, 3)
        self.shortcut = _conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_up(F.relu(self.norm1(x, condition))))
        h = self.conv2(F.relu(self.norm2(h, condition)))
        return h + _up(self.shortcut(x))


class ResidualGenerator(nn.Module):
    """``G(z, y)``: latents and class indices to images in [-1, 1] of shape (N, 3, patch_size, patch_size)."""

    def __init__(self, num_classes: int, patch_size: int, *, z_dim: int, channels: int, max_channels: int) -> None:
        super().__init__()
        widths = stage_channels(patch_size, channels, max_channels)
        self.num_classes, self.patch_size, self.z_dim = num_classes, patch_size, z_dim
        self.embed = nn.Embedding(num_classes, z_dim)
        self.base = spectral_norm(nn.Linear(2 * z_dim, widths[0] * 16))
        self.blocks = nn.ModuleList(GeneratorBlock(a, b, 2 * z_dim) for a, b in zip(widths[:-1], widths[1:]))
        self.norm = nn.BatchNorm2d(widths[-1])
        self.to_rgb = _conv(widths[-1], 3, 3)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        condition = torch.cat([z, self.embed(labels)], dim=1)
        x = self.base(condition).view(len(z), -1, 4, 4)
        for block in self.blocks:
            x = block(x, condition)
        return torch.tanh(self.to_rgb(F.relu(self.norm(x))))


class DiscriminatorBlock(nn.Module):
    """A residual block, halving the resolution when ``down``; the first block sees raw pixels (no ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, *, down: bool, first: bool = False) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = _conv(in_channels, out_channels, 3)
        self.conv2 = _conv(out_channels, out_channels, 3)
        self.shortcut = _conv(in_channels, out_channels, 1) if down or in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        skip = x
        if self.down:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + (self.shortcut(skip) if self.shortcut is not None else skip)


class ResidualDiscriminator(nn.Module):
    """Residual projection discriminator ``D(x, y) = psi(phi(x)) + embed(y) . phi(x)``; ``y = -1``: ``psi`` only."""

    def __init__(self, num_classes: int, patch_size: int, *, channels: int, max_channels: int) -> None:
        super().__init__()
        widths = stage_channels(patch_size, channels, max_channels)[::-1]  # fine to coarse
        blocks = [DiscriminatorBlock(3, widths[0], down=True, first=True)]
        blocks += [DiscriminatorBlock(a, b, down=True) for a, b in zip(widths[:-2], widths[1:-1])]
        blocks.append(DiscriminatorBlock(widths[-2], widths[-1], down=False))
        self.blocks = nn.ModuleList(blocks)
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, widths[-1]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(x)``: the sum-pooled final feature maps, shape (N, channels)."""
        for block in self.blocks:
            x = block(x)
        return F.relu(x).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return project(self.features(x), labels, self.linear, self.embed)
