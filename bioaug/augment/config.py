"""``AugmentConfig``: every option of ``bioaug augment``.

Kept free of torch so that the command line can build ``--help`` and ``--dry-run`` without importing it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..classify.networks import NETWORKS
from ..config import check_choices, flag, option
from ..devices import DEVICES
from ..errors import ConfigError


@dataclass
class AugmentConfig:
    """How many synthetic patches to draw from a GAN run, and which of them to keep.

    Give exactly one of ``per_class`` (that many of every chosen class) and ``balance_to`` (enough of each
    chosen class to bring its real count up to the target; 0 targets the largest real class).
    """

    per_class: int | None = option(None, "synthetic patches per class")
    balance_to: int | None = option(None, "bring every class (real + synthetic) up to this many patches; 0 = "
                                           "up to the largest real class")
    classes: list[str] = option([], "generate only these classes (default: all classes of the run)")
    truncation: float | None = option(None, "truncation psi in (0, 1]: latents are scaled by psi towards their "
                                            "mean, trading diversity for fidelity (None: no truncation)")
    seed: int = option(0, "seed of the latents; sample i of a store depends only on seed, i and its class")
    batch_size: int = option(256, "patches generated and scored per step (the generator itself runs on fixed "
                                  "chunks, so a patch does not depend on it)")
    device: str = option("auto", "where to generate: CUDA when present with auto", choices=DEVICES)
    select: bool = option(False, "keep only samples a classifier trained on the real patches assigns to their "
                                 "class confidently and whose features lie within that class's real features")
    min_confidence: float = option(0.8, "selection: minimum classifier probability of the intended class")
    feature_quantile: float = option(0.95, "selection: keep samples whose feature distance to their class's real "
                                           "patches is within this quantile of the real patches' own distances")
    classifier: str = option("resnet10-w0.5", "network of the selection/audit classifier (a bioaug.classify name)",
                             choices=NETWORKS)
    classifier_steps: int = option(400, "optimiser steps of the selection/audit classifier (trained once per real "
                                        "store and cached in the run directory)")
    audit: bool = option(True, "memorisation audit: nearest real patch of every sample, near-copy flags, "
                               "a sheet of the closest pairs")
    copy_ratio: float = option(0.5, "audit: flag a sample as a near-copy when its pixel distance to the nearest "
                                    "real patch is below this fraction of that patch's distance to its own "
                                    "nearest real neighbour")
    sheets: bool = option(True, "latent-space sheets: walks, class interpolation, latent arithmetic")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the option's flag on a value no run could use (before anything is
        generated or written)."""
        check_choices(self)
        if (self.per_class is None) == (self.balance_to is None):
            raise ConfigError(flag("per_class"), "give exactly one of per_class (samples per class) and "
                                                 "balance_to (target count per class)")
        if self.per_class is not None and self.per_class < 1:
            raise ConfigError(flag("per_class"), f"must be at least 1, got {self.per_class}")
        if self.balance_to is not None and self.balance_to < 0:
            raise ConfigError(flag("balance_to"), f"must be 0 (largest class) or positive, got {self.balance_to}")
        if self.truncation is not None and not 0 < self.truncation <= 1:
            raise ConfigError(flag("truncation"), f"must lie in (0, 1], got {self.truncation}")
        for name in ("batch_size", "classifier_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(flag(name), f"must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError(flag("min_confidence"), f"must lie in [0, 1], got {self.min_confidence}")
        for name in ("feature_quantile", "copy_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(flag(name), f"must lie in (0, 1], got {getattr(self, name)}")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(flag("classes"), f"names a class twice: {self.classes}")

    def check_classes(self, class_names: list[str], source: str) -> list[int]:
        """Indices of the chosen classes among ``class_names`` (all when none were chosen).

        Raises ``ConfigError`` naming an unknown class and the valid ones.
        """
        for name in self.classes:
            if name not in class_names:
                raise ConfigError(source, f"unknown class {name!r}; the run's classes are {', '.join(class_names)}")
        chosen = set(self.classes or class_names)
        return [index for index, name in enumerate(class_names) if name in chosen]
