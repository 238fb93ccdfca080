"""``EvaluateConfig``: every option of ``bioaug evaluate``, checked before any training starts.

Kept free of torch and scikit-learn so the command line can build ``--help`` and ``--dry-run`` quickly; the
few checks that need the classifier registry import it inside ``validate``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import option
from ..errors import ConfigError
from ..gan.config import DEVICES

ARMS = ("real", "classic", "synthetic", "selected", "synthetic_only", "colour")
"""Training sets compared on the same splits and seeds: real patches; real with albumentations; real plus
synthetic; real plus selected synthetic; synthetic only (tested on real); a colour-statistics baseline."""
ARM_STORES = {"synthetic": "synthetic", "selected": "selected", "synthetic_only": "synthetic"}
"""The synthetic store (all drawn patches, or those kept by selection) each synthetic arm trains on."""
SYNTHETIC_ARMS = tuple(ARM_STORES)


@dataclass
class EvaluateConfig:
    """The evaluation protocol: splits, label budgets, arms, seeds, classifier, generator and augmentation."""

    folds: int = option(5, "grouped cross-validation folds (StratifiedGroupKFold)")
    run_folds: list[int] = option([], "indices of the folds to run (empty: all folds)")
    split_seed: int = option(0, "seed of the fold assignment, the label budgets and the generators")
    group_by: str = option("slide", "manifest column naming the groups kept on one side of every split "
                                    "(slide, or e.g. patient)")
    budgets: list[float] = option([0.1, 0.25, 1.0], "label budgets: fractions of each fold's training groups "
                                                    "(nested: smaller budgets' groups are among larger ones')")
    seeds: list[int] = option([0, 1, 2], "classifier seeds; every arm runs every seed on the same splits")
    arms: list[str] = option(list(ARMS), "arms to compare", choices=ARMS)
    validation_fraction: float = option(0.2, "fraction of training groups held out for early stopping")
    network: str = option("resnet18", "classifier: a MONAI network of bioaug.classify.NETWORKS, e.g. resnet18, "
                                      "densenet121, efficientnet-b0")
    epochs: int = option(12, "maximum classifier epochs")
    patience: int = option(3, "stop after this many epochs without a better validation balanced accuracy")
    batch_size: int = option(64, "classifier batch size")
    lr: float = option(1e-3, "classifier AdamW learning rate")
    weight_decay: float = option(1e-4, "classifier AdamW weight decay")
    gan_steps: int = option(5000, "GAN training steps per fold and budget")
    gan_batch_size: int | None = option(None, "GAN batch size (None: by patch size)")
    synthetic_per_class: int = option(0, "synthetic patches per class (0: as many as the largest class among "
                                         "the budget's real training patches)")
    truncation: float | None = option(None, "latent truncation of the generator (None: none)")
    min_confidence: float = option(0.8, "selection: minimum real-trained classifier confidence in the "
                                        "intended class")
    feature_quantile: float = option(0.95, "selection: keep synthetic patches within this quantile of real "
                                           "nearest-neighbour distances")
    synthetic: dict[str, str] = option({}, "ready synthetic stores per cell, FOLD-BUDGET -> store (e.g. "
                                           "'0-0.1': path); those cells train no generator")
    device: str = option("auto", "where to train: CUDA (with mixed precision) when present with auto",
                         choices=DEVICES)

    def validate(self) -> None:
        """Raise ``ConfigError`` for any value no evaluation could use, including missing synthetic stores."""
        from ..classify import NETWORKS

        if self.folds < 2:
            raise ConfigError("folds", f"need at least 2 folds, got {self.folds}")
        bad_folds = [k for k in self.run_folds if not 0 <= k < self.folds]
        if bad_folds:
            raise ConfigError("run_folds", f"fold {bad_folds[0]} is not in 0..{self.folds - 1}")
        for name in ("budgets", "seeds", "arms"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ConfigError(name, f"need at least one value and no repeats, got {values}")
        bad_budgets = [b for b in self.budgets if not 0 < b <= 1]
        if bad_budgets:
            raise ConfigError("budgets", f"a label budget is a fraction of training slides in (0, 1], "
                                         f"got {bad_budgets[0]}")
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown:
            raise ConfigError("arms", f"unknown arm {unknown[0]!r}; valid: {', '.join(ARMS)}")
        if self.network not in NETWORKS:
            raise ConfigError("network", f"unknown network {self.network!r}; valid: {', '.join(NETWORKS)}")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError("validation_fraction", f"must be in (0, 1), got {self.validation_fraction}")
        if self.device not in DEVICES:
            raise ConfigError("device", f"{self.device!r} is not one of {', '.join(DEVICES)}")
        for name in ("epochs", "batch_size", "gan_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.patience < 0 or self.synthetic_per_class < 0:
            raise ConfigError("config", "lr must be > 0; weight_decay, patience and synthetic_per_class >= 0")
        if not 0 <= self.min_confidence <= 1 or not 0 < self.feature_quantile <= 1:
            raise ConfigError("config", "min_confidence must lie in [0, 1] and feature_quantile in (0, 1]")
        for key, path in self.synthetic.items():
            fold, budget = synthetic_key(key)
            if fold not in self.fold_indices() or budget not in self.budgets:
                raise ConfigError(f"synthetic {key}", f"names no evaluated cell (folds {self.fold_indices()}, "
                                                      f"budgets {self.budgets})")
            if not (Path(path) / "store.json").is_file():
                raise ConfigError(f"synthetic {key}", f"no patch store at {path}")

    def fold_indices(self) -> list[int]:
        """The folds this evaluation runs."""
        return list(self.run_folds) or list(range(self.folds))

    def ready_synthetic(self, fold: int, budget: float) -> Path | None:
        """The ready synthetic store given for (fold, budget), if any."""
        for key, path in self.synthetic.items():
            if synthetic_key(key) == (fold, budget):
                return Path(path)
        return None


def synthetic_key(key: str) -> tuple[int, float]:
    """(fold, budget) from a ``synthetic`` key such as ``"0-0.1"`` or ``"2-1.00"``."""
    fold, _, budget = str(key).partition("-")
    try:
        return int(fold), float(budget)
    except ValueError:
        raise ConfigError(f"synthetic {key}", "keys are FOLD-BUDGET, e.g. 0-0.1") from None
