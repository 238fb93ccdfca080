"""The plain preset's class-conditional generator and projection discriminator, and what every preset shares.

Both grow one stage per doubling of resolution from a 4x4 base, so the depth follows the patch size: three
stages at 32 px, four at 64, five at 128. Channels are ``channels`` at full resolution and double at every
halving up to ``max_channels`` (:func:`stage_channels`). Each stage is a single 3x3 convolution (generator,
after nearest-neighbour upsampling, which avoids the checkerboard of transposed convolutions) or a single 4x4
stride-2 convolution (discriminator): small-data GANs are limited by the discriminator overfitting, not by
capacity, and one convolution per stage keeps CPU training at hundreds of images per second. The residual
preset (:mod:`bioaug.gan.residual`) reuses :class:`ConditionalBatchNorm2d`, :func:`stage_channels` and
:func:`project`; :func:`build_generator` and :func:`build_discriminator` build any preset by name.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .config import TrainConfig
from .presets import get_preset


def stage_channels(patch_size: int, channels: int, max_channels: int) -> list[int]:
    """Channels at resolutions 4, 8, ..., ``patch_size`` (coarse to fine)."""
    sizes = [4 * 2 ** i for i in range((patch_size // 4).bit_length())]
    return [min(channels * patch_size // size, max_channels) for size in sizes]


def project(phi: torch.Tensor, labels: torch.Tensor, linear: nn.Module, embed: nn.Module) -> torch.Tensor:
    """Projection head ``psi(phi) + [y >= 0] embed(y) . phi``: scores (N,) from pooled features (N, C).

    Rows labelled -1 (unlabelled patches) get the class-independent term ``psi(phi)`` alone, so they train
    the features and ``psi`` but never the class embedding: its gradient from such rows is exactly zero.
    """
    labelled = labels >= 0
    class_term = (embed(labels.clamp(min=0)) * phi).sum(dim=1)
    return linear(phi).squeeze(1) + torch.where(labelled, class_term, torch.zeros_like(class_term))


class ConditionalBatchNorm2d(nn.Module):
    """Batch normalisation whose per-channel gain and bias are functions of the class embedding.

    The projections start at zero, so the layer starts as plain normalisation and learns how much each class
    shifts and scales every feature map (as in BigGAN's conditional batch norm).
    """

    def __init__(self, channels: int, condition_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(condition_dim, channels)
        self.bias = nn.Linear(condition_dim, channels)
        for layer in (self.gain, self.bias):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        gain = 1 + self.gain(condition)[:, :, None, None]
        return self.norm(x) * gain + self.bias(condition)[:, :, None, None]


class Generator(nn.Module):
    """``G(z, y)``: latents and class indices to images in [-1, 1] of shape (N, 3, patch_size, patch_size).

    The class enters twice: its embedding is concatenated to the latent that seeds the 4x4 base, and it sets
    the gain and bias of every normalisation layer.
    """

    def __init__(self, num_classes: int, patch_size: int, *, z_dim: int, channels: int, max_channels: int) -> None:
        super().__init__()
        widths = stage_channels(patch_size, channels, max_channels)
        self.num_classes, self.patch_size, self.z_dim = num_classes, patch_size, z_dim
        self.embed = nn.Embedding(num_classes, z_dim)
        self.base = nn.Linear(2 * z_dim, widths[0] * 16)
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(w, z_dim) for w in widths)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.act = nn.ReLU()

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        condition = self.embed(labels)
        x = self.base(torch.cat([z, condition], dim=1)).view(len(z), -1, 4, 4)
        for norm, conv in zip(self.norms, self.convs):
            x = conv(self.up(self.act(norm(x, condition))))
        return torch.tanh(self.to_rgb(self.act(self.norms[-1](x, condition))))


class Discriminator(nn.Module):
    """Projection discriminator ``D(x, y) = w . phi(x) + embed(y) . phi(x)`` (Miyato & Koyama, 2018).

    ``y = -1`` scores only the class-independent term ``w . phi(x)`` (:func:`project`).

    The class enters as an inner product with the pooled features rather than as an input channel, which
    conditions on the class without letting it dominate the realism score. Every weight is spectrally
    normalised so the discriminator is 1-Lipschitz per layer, which keeps its gradients useful to the
    generator even when it separates real from fake easily, as it does on small data.
    """

    def __init__(self, num_classes: int, patch_size: int, *, channels: int, max_channels: int) -> None:
        super().__init__()
        widths = stage_channels(patch_size, channels, max_channels)[::-1]
        self.from_rgb = spectral_norm(nn.Conv2d(3, widths[0], 3, padding=1))
        self.downs = nn.ModuleList(spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1))
                                   for a, b in zip(widths[:-1], widths[1:]))
        self.final = spectral_norm(nn.Conv2d(widths[-1], widths[-1], 3, padding=1))
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, widths[-1]))
        self.act = nn.LeakyReLU(0.2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(x)``: the sum-pooled final feature maps, shape (N, channels)."""
        x = self.act(self.from_rgb(x))
        for down in self.downs:
            x = self.act(down(x))
        return self.act(self.final(x)).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return project(self.features(x), labels, self.linear, self.embed)


def build_generator(config: TrainConfig, num_classes: int, patch_size: int) -> nn.Module:
    """The generator of the preset a resolved ``config`` names."""
    cls = get_preset(config.preset).generator_class()
    return cls(num_classes, patch_size, z_dim=config.z_dim, channels=config.channels,
               max_channels=config.max_channels)


def build_discriminator(config: TrainConfig, num_classes: int, patch_size: int) -> nn.Module:
    """The discriminator of the preset a resolved ``config`` names."""
    cls = get_preset(config.preset).discriminator_class()
    return cls(num_classes, patch_size, channels=config.channels, max_channels=config.max_channels)
