"""The classifier as the evaluation uses it: a MONAI network behind what it is shown and how it predicts.

``PatchClassifier`` wraps a network from ``networks.py`` so that every caller (training, prediction, feature
extraction, a classifier reloaded from disk) applies the same input recipe without repeating it:

- **view**: the network sees a centre crop of ``view`` pixels of each patch, so one store cut at the largest
  field of view serves every smaller one on the same nuclei, and synthetic patches are shown at the same view;
- **marker**: optionally a fourth channel, a Gaussian centred on the patch, marks the nucleus being classified
  (MONAI's nucleus-classification bundle gives its network the nucleus mask for the same reason);
- **test-time augmentation** (eval mode only): class probabilities averaged over the 8 symmetries of the
  square, and with ``dihedral+shift`` over crops shifted by a few pixels (SC-CNN's neighbouring ensemble);
- **logit adjustment** (eval mode only): ``tau * log prior`` subtracted from the logits (Menon et al., ICLR
  2021), with the class prior the network was trained under kept as a buffer, so it travels with the weights.

In eval mode with TTA the module returns log mean probabilities; a softmax of them gives the averaged
probabilities back, so ``predict_proba`` needs no special case.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .config import ClassifierConfig, crop_reach
from .networks import build_network


def centre_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` pixels of (N, H, W, C) images (a view, not a copy)."""
    height, width = images.shape[1:3]
    top, left = (height - size) // 2, (width - size) // 2
    return images[:, top:top + size, left:left + size]


def gaussian_marker(size: int, sigma: float) -> torch.Tensor:
    """(size, size) Gaussian with peak 1 at the patch centre: where the classified nucleus sits."""
    coordinates = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    return torch.exp(-(coordinates[:, None] ** 2 + coordinates[None, :] ** 2) / (2 * sigma ** 2))


class PatchClassifier(nn.Module):
    """A network with a field of view, an optional marker channel, TTA and logit adjustment (see the module)."""

    def __init__(self, config: ClassifierConfig, n_classes: int) -> None:
        super().__init__()
        self.view, self.marker, self.sigma = config.view, config.marker, config.marker_sigma
        self.tta, self.shift, self.tau = config.tta, config.tta_shift, config.logit_adjustment
        self.network = build_network(config.network, n_classes, 4 if config.marker == "gaussian" else 3)
        self.register_buffer("log_prior", torch.zeros(n_classes))
        self.tta_enabled = True

    def input_size(self, patch_size: int) -> int:
        """Edge of the centre crop of a ``patch_size`` patch that prediction needs: the view plus any TTA shifts."""
        return min(patch_size, crop_reach(self.view or patch_size, self.tta if self.tta_enabled else "none",
                                          self.shift))

    def set_prior(self, prior: np.ndarray) -> None:
        """Record the class distribution the network is trained under (for logit adjustment)."""
        self.log_prior.copy_(torch.log(torch.as_tensor(np.clip(prior, 1e-12, None), dtype=torch.float32)))

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) with the marker channel appended, if any, centred on the patch."""
        if self.marker == "none":
            return images
        marker = gaussian_marker(images.shape[-1], self.sigma).to(images)
        return torch.cat([images, marker.expand(len(images), 1, *marker.shape)], dim=1)

    def _crop(self, inputs: torch.Tensor, dy: int = 0, dx: int = 0) -> torch.Tensor:
        """The ``view`` crop of ``inputs`` centred on the patch centre moved by (dy, dx) pixels."""
        size = inputs.shape[-1]
        view = self.view or size
        top, left = (size - view) // 2 + dy, (size - view) // 2 + dx
        if min(top, left) < 0 or max(top, left) + view > size:
            raise ValueError(f"a {view} px view shifted by ({dy}, {dx}) does not fit in {size} px inputs")
        return inputs[..., top:top + view, left:left + view]

    def _adjusted(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = self.network(inputs)
        return logits - self.tau * self.log_prior.to(logits.dtype) if not self.training and self.tau else logits

    def variants(self, inputs: torch.Tensor) -> Iterator[torch.Tensor]:
        """The crops test-time augmentation averages over (only the centred crop without TTA)."""
        centred = self._crop(inputs)
        if self.tta == "none" or not self.tta_enabled:
            yield centred
            return
        for flipped in (centred, centred.flip(-1)):
            for turns in range(4):
                yield torch.rot90(flipped, turns, dims=(-2, -1))
        if self.tta == "dihedral+shift":
            for dy, dx in ((-self.shift, 0), (self.shift, 0), (0, -self.shift), (0, self.shift)):
                yield self._crop(inputs, dy, dx)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for (N, 3, H, W) patches; in eval mode with TTA, log mean probabilities over the variants."""
        inputs = self._prepare(images)
        if self.training or self.tta == "none" or not self.tta_enabled:
            return self._adjusted(self._crop(inputs))
        probabilities = torch.stack([torch.softmax(self._adjusted(v).float(), dim=1) for v in self.variants(inputs)])
        return torch.log(probabilities.mean(0).clamp_min(1e-12))


@contextlib.contextmanager
def without_tta(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model`` (a ``PatchClassifier``) sees the centred crop only: for feature extraction."""
    previous = getattr(model, "tta_enabled", None)
    if previous is not None:
        model.tta_enabled = False
    try:
        yield
    finally:
        if previous is not None:
            model.tta_enabled = previous
