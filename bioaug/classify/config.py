"""``ClassifierConfig``: how the downstream classifier is trained.

Kept free of torch so that ``bioaug evaluate --help`` and ``--dry-run`` can show it as a section of the
evaluation config without importing a network.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..errors import ConfigError
from .augmentation import RECIPES
from .networks import NETWORKS


@dataclass
class ClassifierConfig:
    """How the downstream classifier is trained; one instance per evaluation run."""

    network: str = option("resnet10-w0.5", "MONAI network (see benchmarks/classifier_choice.py for the default)",
                          choices=tuple(NETWORKS))
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
    augmentation: str = option("none", "training-time augmentation recipe", choices=tuple(RECIPES))

    def validate(self) -> None:
        """Reject impossible values before any training starts."""
        if self.network not in NETWORKS:
            raise ConfigError("network", f"unknown network {self.network!r}; valid: {', '.join(NETWORKS)}")
        if self.augmentation not in RECIPES:
            raise ConfigError("augmentation", f"{self.augmentation!r} is not one of {', '.join(RECIPES)}")
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("batch_size", "batch norm needs at least 2 patches per batch")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError("warmup_fraction", f"must lie in [0, 1), got {self.warmup_fraction}")
        if self.lr <= 0 or self.weight_decay < 0 or self.patience < 0:
            raise ConfigError("classifier", "lr must be > 0, weight_decay and patience >= 0")
