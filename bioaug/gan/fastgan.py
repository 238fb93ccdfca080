"""The ``fastgan`` preset: a class-conditional generator and discriminator of the FastGAN family.

After Liu et al., "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image Synthesis"
(ICLR 2021), which trains from under a hundred images in hours on one GPU with two ideas, both kept here:

- **Skip-layer excitation** in the generator: a coarse stage's features, pooled to 4x4 and squeezed to one
  sigmoid gate per channel, rescale the channels of a stage four times finer. Gradients reach the coarse
  stages through a short path, and the coarse layout sets which fine features are active, at the cost of two
  small convolutions on 4x4 maps.
- **A self-supervised discriminator**: small decoders rebuild the (augmented) real image from the
  discriminator's 8x8 features, and a random quarter of it from a quarter of its 16x16 features, and their
  reconstruction error is added to the discriminator's loss. The features must then describe the whole
  image rather than the few cues that separate a few hundred memorised reals from fakes, which is the
  overfitting small data invites.

Differences from the paper, each for a reason of this project: the class enters as in the other presets (its
embedding joins the latent at the 4x4 base and sets every batch norm's gain and bias, and the discriminator
ends in the shared projection head, :func:`bioaug.gan.networks.project`); the generator has no noise
injection, so a sample stays a pure function of its latent and class (sampling and exact resume rely on it);
the discriminator is spectrally normalised without batch norm, because its batch mixes reals, fakes and
unlabelled rows, whose statistics would let a row's score depend on its batchmates; the reconstruction error
is the mean absolute pixel error (the paper adds LPIPS, whose pretrained weights the project does not ship);
and every generator stage is the paper's cheaper block (upsample, one 3x3 convolution, batch norm, GLU).
Widths follow :func:`bioaug.gan.networks.stage_channels`, as in the other presets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .networks import ConditionalBatchNorm2d, project, stage_channels

#: A stage at resolution ``r`` is excited by the stage at ``r / EXCITATION_SPAN`` (8 -> 32 px, 16 -> 64 px, ...).
EXCITATION_SPAN = 4


def _sn_conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Module:
    padding = (kernel - stride + 1) // 2
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding))


class SkipExcitation(nn.Module):
    """Channel gates in (0, 1) for a fine stage, computed from a coarse stage's features."""

    def __init__(self, coarse_channels: int, fine_channels: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(coarse_channels, fine_channels, 4)
        self.excite = nn.Conv2d(fine_channels, fine_channels, 1)

    def forward(self, coarse: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(coarse, 4)
        return torch.sigmoid(self.excite(F.silu(self.squeeze(pooled))))


class FastGenerator(nn.Module):
    """``G(z, y)``: latents and class indices to images in [-1, 1] of shape (N, 3, patch_size, patch_size).

    Every stage is ``up -> conv3 -> CBN -> GLU`` (the convolution makes twice the channels the gate keeps);
    stages at 16 px and finer are multiplied by the skip-layer excitation of the stage four times coarser.
    """

    def __init__(self, num_classes: int, patch_size: int, *, z_dim: int, channels: int, max_channels: int) -> None:
        super().__init__()
        self.widths = stage_channels(patch_size, channels, max_channels)
        self.num_classes, self.patch_size, self.z_dim = num_classes, patch_size, z_dim
        self.embed = nn.Embedding(num_classes, z_dim)
        self.base = nn.Linear(2 * z_dim, 2 * self.widths[0] * 16)
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(2 * w, z_dim) for w in self.widths)
        self.convs = nn.ModuleList(nn.Conv2d(a, 2 * b, 3, padding=1)
                                   for a, b in zip(self.widths[:-1], self.widths[1:]))
        self.span = EXCITATION_SPAN.bit_length() - 1  # stages between a coarse source and the stage it excites
        self.excitations = nn.ModuleList(SkipExcitation(self.widths[i - self.span], self.widths[i])
                                         for i in range(self.span, len(self.widths)))
        self.to_rgb = nn.Conv2d(self.widths[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        condition = self.embed(labels)
        x = self.base(torch.cat([z, condition], dim=1)).view(len(z), -1, 4, 4)
        stages = [F.glu(self.norms[0](x, condition), dim=1)]
        for i, conv in enumerate(self.convs, start=1):
            x = F.glu(self.norms[i](conv(F.interpolate(stages[-1], scale_factor=2, mode="nearest")), condition),
                      dim=1)
            if i >= self.span:
                x = x * self.excitations[i - self.span](stages[i - self.span])
            stages.append(x)
        return torch.tanh(self.to_rgb(stages[-1]))


class DownBlock(nn.Module):
    """Halves the resolution on two paths averaged: ``conv4/2 -> LReLU -> conv3 -> LReLU`` and
    ``avgpool -> conv1 -> LReLU`` (FastGAN's discriminator block, spectrally normalised, without batch norm)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(_sn_conv(in_channels, out_channels, 4, 2), nn.LeakyReLU(0.2),
                                  _sn_conv(out_channels, out_channels, 3), nn.LeakyReLU(0.2))
        self.direct = nn.Sequential(nn.AvgPool2d(2), _sn_conv(in_channels, out_channels, 1), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


class Decoder(nn.Module):
    """Features (N, C, s, s) to an image (N, 3, s * 2**ups, s * 2**ups) in [-1, 1]: ``up -> conv3 -> GLU`` stages."""

    def __init__(self, in_channels: int, width: int, ups: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(ups):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(in_channels if i == 0 else width, 2 * width, 3, padding=1), nn.GLU(dim=1)]
        self.body = nn.Sequential(*layers, nn.Conv2d(width, 3, 3, padding=1), nn.Tanh())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


class FastDiscriminator(nn.Module):
    """Projection discriminator with self-supervised decoders; ``D(x, y) = psi(phi(x)) + embed(y) . phi(x)``.

    A 4x4 stride-2 convolution takes the image to half resolution, :class:`DownBlock` stages take it to 4x4,
    and a 1x1 convolution, LReLU and sum pooling give ``phi(x)``. ``forward(x, labels, reconstruct=n)``
    also returns the reconstruction loss of the first ``n`` rows (the reals): the whole image at half
    resolution from the 8x8 features, and a random quarter of it at full resolution from the matching
    quarter of the 16x16 features. Labels of -1 score ``psi`` alone, as in every preset.
    """

    reconstructs = True

    def __init__(self, num_classes: int, patch_size: int, *, channels: int, max_channels: int) -> None:
        super().__init__()
        widths = stage_channels(patch_size, channels, max_channels)[::-1]  # fine to coarse: P, P/2, ..., 4 px
        self.patch_size = patch_size
        self.from_rgb = nn.Sequential(_sn_conv(3, widths[1], 4, 2), nn.LeakyReLU(0.2))
        self.downs = nn.ModuleList(DownBlock(a, b) for a, b in zip(widths[1:-1], widths[2:]))
        self.final = nn.Sequential(_sn_conv(widths[-1], widths[-1], 1), nn.LeakyReLU(0.2))
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, widths[-1]))
        # both decoders go from 8 px (the 8 px map, or a quarter of the 16 px one) to P/2
        ups = (patch_size // 16).bit_length() - 1
        self.decode_whole = Decoder(widths[-2], channels, ups)
        self.decode_part = Decoder(widths[-3], channels, ups)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, *,
                reconstruct: int = 0) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = self.from_rgb(x)
        maps = {h.shape[-1]: h}  # feature maps by side
        for down in self.downs:
            h = down(h)
            maps[h.shape[-1]] = h
        scores = project(self.final(h).sum(dim=(2, 3)), labels, self.linear, self.embed)
        if not reconstruct:
            return scores
        return scores, self.reconstruction_loss(x[:reconstruct], maps[8][:reconstruct], maps[16][:reconstruct])

    def reconstruction_loss(self, images: torch.Tensor, at_8: torch.Tensor, at_16: torch.Tensor) -> torch.Tensor:
        """Mean absolute error of both decoders on ``images``. The quarter is drawn per batch from torch's CPU
        generator (checkpointed like every other), so choosing it never waits for a GPU."""
        whole = F.avg_pool2d(images, 2)
        quarter = int(torch.randint(0, 4, ()))
        row, col = divmod(quarter, 2)
        half, crop = self.patch_size // 2, at_16.shape[-1] // 2
        part = images[:, :, row * half:(row + 1) * half, col * half:(col + 1) * half]
        features = at_16[:, :, row * crop:(row + 1) * crop, col * crop:(col + 1) * crop]
        return ((self.decode_whole(at_8).float() - whole.float()).abs().mean()
                + (self.decode_part(features).float() - part.float()).abs().mean())
