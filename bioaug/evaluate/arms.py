"""The arms of an evaluation: what each classifier trains on, and with which augmentation.

An arm is one small registered object; the protocol asks it, never its name, what to do, so adding an arm
touches this file only. Every network arm trains the same number of optimiser steps on the same splits and
seeds; extra patches (synthetic or pseudo-labelled) fill ``synthetic_fraction`` of every batch instead of
lengthening training, so arms differ only in what they see.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..registry import Registry

EXTRA_SOURCES = ("synthetic", "selected", "pseudo")
"""Where an arm's extra patches come from: every drawn synthetic patch, the synthetic patches kept by selection,
or unlabelled-pool patches labelled confidently by the cell's ``classic`` classifier of the same seed."""


@dataclass(frozen=True)
class Arm:
    """One training recipe compared on every (fold, budget, seed) cell."""

    name: str
    description: str
    classic: bool = False
    """Train with the classic augmentation recipe (``EvaluateConfig.classic_recipe``)."""
    extra: str | None = None
    """Source of the extra patches in every batch (one of ``EXTRA_SOURCES``, or several joined by ``+``, whose
    patches are pooled), or None."""
    extra_only: bool = False
    """Train on the extra patches alone (test on real ones)."""
    network: bool = True
    """False for the colour-statistics baseline, which trains no network."""

    @property
    def sources(self) -> list[str]:
        """The extra-patch sources this arm pools (empty without extra patches)."""
        return self.extra.split("+") if self.extra else []

    @property
    def needs_generator(self) -> bool:
        return any(source in ("synthetic", "selected") for source in self.sources)

    @property
    def needs_pool(self) -> bool:
        return "pseudo" in self.sources


ARMS: Registry[Arm] = Registry("arm", lambda message: ConfigError("--arms", message))


for _arm in (
    Arm("real", "the budget's real patches, no augmentation"),
    Arm("classic", "real patches with the classic augmentation recipe: standard practice", classic=True),
    Arm("synthetic", "real plus generated patches", extra="synthetic"),
    Arm("selected", "real plus the generated patches kept by selection", extra="selected"),
    Arm("classic+synthetic", "classic augmentation plus generated patches", classic=True, extra="synthetic"),
    Arm("classic+selected", "classic augmentation plus selected generated patches", classic=True,
        extra="selected"),
    Arm("pseudo_label", "classic augmentation plus unlabelled-pool patches labelled by the classic classifier "
        "(the semi-supervised baseline)", classic=True, extra="pseudo"),
    Arm("pseudo_label+selected", "classic augmentation plus the pseudo-labelled pool and selected generated "
        "patches, pooled in the batches' extra share", classic=True, extra="pseudo+selected"),
    Arm("synthetic_only", "generated patches alone, tested on real ones", extra="synthetic", extra_only=True),
    Arm("colour", "scikit-learn on colour statistics: how far colour alone gets", network=False),
):
    ARMS.register(_arm.name, _arm)

REFERENCE_ARMS = ("classic", "real")
"""Arms every other arm is compared with, in order: standard practice first."""
