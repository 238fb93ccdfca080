"""``ClassifierConfig``: how the downstream classifier is trained.

Kept free of torch so that ``bioaug evaluate --help`` and ``--dry-run`` can show it as a section of the
evaluation config without importing a network.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import check_choices, flag, option
from ..errors import ConfigError
from .recipes import RECIPES
from .networks import NETWORKS


def crop_reach(view: int, tta: str, shift: int) -> int:
    """Edge of the centre crop that prediction with ``tta`` needs for a ``view`` px view: the view plus the
    shifted crops' reach on both sides with ``dihedral+shift``."""
    return view + (2 * shift if tta == "dihedral+shift" else 0)


MARKERS = ("none", "gaussian")
TTA_MODES = ("none", "dihedral", "dihedral+shift")
CLASS_WEIGHTINGS = ("inverse", "sqrt", "none")
SAMPLERS = ("uniform", "balanced")


@dataclass
class ClassifierConfig:
    """How the downstream classifier is trained; one instance per evaluation run."""

    network: str = option("resnet10-w0.5", "MONAI network (see benchmarks/classifier_choice.py for the default)",
                          choices=NETWORKS)
    steps: int = option(400, "optimiser steps, the same for every arm whatever its training-set size")
    warmup_fraction: float = option(0.05, "share of the steps with a linear learning-rate warm-up, before "
                                          "cosine decay to zero")
    batch_size: int = option(64, "patches per optimisation step")
    lr: float = option(2e-3, "AdamW peak learning rate")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    patience: int = option(0, "early stopping: stop after this many validations without a better validation "
                              "balanced accuracy and keep the best; 0 (default) trains every step, no "
                              "validation split")
    eval_every: int = option(50, "steps between validations when patience > 0")
    seed: int = option(0, "seed for initialisation, batch order and augmentation")
    augmentation: str = option("none", "training-time augmentation recipe", choices=RECIPES)
    view: int = option(0, "field of view in pixels: the network sees a centre crop of this edge of every patch "
                          "(real, pseudo-labelled and synthetic alike); 0: the whole patch")
    view_um: float = option(0.0, "field of view in µm, converted with the store's µm/px (instead of view)")
    marker: str = option("none", "extra input channel marking the nucleus being classified: gaussian (centred "
                                 "on the patch), or none", choices=MARKERS)
    marker_sigma: float = option(4.0, "standard deviation of the gaussian marker, in pixels")
    tta: str = option("none", "test-time augmentation: predictions averaged over the 8 flips and right-angle "
                              "rotations (dihedral), plus crops shifted by tta_shift pixels (dihedral+shift)",
                      choices=TTA_MODES)
    tta_shift: int = option(2, "shift of the neighbouring crops of dihedral+shift, in pixels")
    class_weighting: str = option("inverse", "cross-entropy class weights from the batches' class mixture: "
                                             "inverse frequency, its square root, or none",
                                  choices=CLASS_WEIGHTINGS)
    sampler: str = option("uniform", "how the real patches of a batch are drawn: uniform, or balanced (every "
                                     "class equally often)", choices=SAMPLERS)
    extra_sampler: str = option("uniform", "how the synthetic or pseudo-labelled share of a batch is drawn: "
                                           "uniform, or balanced (every class equally often: synthetic patches "
                                           "can give the rare class what real labels cannot)", choices=SAMPLERS)
    logit_adjustment: float = option(0.0, "post-hoc logit adjustment tau (Menon et al. 2021): tau x log of the "
                                          "class prior the trained network learned is subtracted at prediction")

    def validate(self) -> None:
        """Reject impossible values before any training starts, naming the option's flag."""
        check_choices(self)
        for name in ("steps", "batch_size", "eval_every", "tta_shift"):
            if getattr(self, name) < 1:
                raise ConfigError(flag(name), f"must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError(flag("batch_size"), "batch norm needs at least 2 patches per batch")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(flag("warmup_fraction"), f"must lie in [0, 1), got {self.warmup_fraction}")
        for name in ("lr", "marker_sigma"):
            if getattr(self, name) <= 0:
                raise ConfigError(flag(name), f"must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "patience", "logit_adjustment"):
            if getattr(self, name) < 0:
                raise ConfigError(flag(name), f"must be at least 0, got {getattr(self, name)}")
        if self.view < 0 or self.view_um < 0 or (self.view and self.view_um):
            raise ConfigError(flag("view"), "give the field of view once, in pixels (view) or in µm (view_um), not "
                                            f"negative; got {self.view} px, {self.view_um} µm")
        if self.view and self.view < 8:
            raise ConfigError(flag("view"), f"a view of {self.view} px is too small for the networks (>= 8)")

    def for_patches(self, patch_size: int, mpp: float, source: object) -> "ClassifierConfig":
        """This config with the field of view in pixels of ``source``'s patches (``patch_size`` px at ``mpp``).

        Raises ``ConfigError`` naming both when the view (with the shifted crops of ``dihedral+shift``) does not
        fit in the patches, so one store cut at the largest view serves every smaller one.
        """
        view = int(round(self.view_um / mpp)) if self.view_um else (self.view or patch_size)
        reach = crop_reach(view, self.tta, self.tta_shift)
        if reach > patch_size:
            what = f"{self.view_um:g} µm ({view} px at {mpp:g} µm/px)" if self.view_um else f"{view} px"
            shifts = f" with tta shifts of {self.tta_shift} px" if reach > view else ""
            raise ConfigError(source, f"the classifier's view of {what}{shifts} is larger than its {patch_size} px "
                                      "patches: tile a store with larger patches or choose a smaller view")
        return dataclasses.replace(self, view=view, view_um=0.0)
