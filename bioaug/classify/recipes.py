"""Training-time augmentation recipes of the classifier, addressable by name.

A recipe maps a seed to a transform applied to one (H, W, 3) uint8 patch at a time as
``transform(image=image)["image"]`` (albumentations' calling convention), or to None for no augmentation.
Which recipe the ``classic`` arms use is chosen on training-side data (``benchmarks/classifier_choice.py``),
never on test results; the others stay selectable for that comparison.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError
from ..registry import Registry

Transform = Callable[..., dict[str, Any]]


def _albumentations() -> Any:
    import albumentations as A

    if not hasattr(A, "HEStain"):
        raise ConfigError("--augmentation", "stain augmentation needs albumentations >= 2.0 (for HEStain)")
    return A


def _geometric(A: Any) -> list[Any]:
    """The dihedral group of the square: nuclei have no preferred orientation, so these are label-preserving."""
    return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=1.0)]


def _geometric_recipe(seed: int) -> Transform:
    A = _albumentations()
    return A.Compose(_geometric(A), seed=seed)


def _stain_recipe(seed: int) -> Transform:
    """Geometry plus mild H&E stain jitter (±10% intensity): slide-to-slide stain variation without new colours."""
    A = _albumentations()
    return A.Compose([*_geometric(A), A.HEStain(method="random_preset", intensity_scale_range=(0.9, 1.1),
                                                intensity_shift_range=(-0.05, 0.05), p=0.5)], seed=seed)


def _strong_recipe(seed: int) -> Transform:
    """The first edition's recipe: geometry, strong stain presets, blur and brightness/contrast."""
    A = _albumentations()
    return A.Compose([
        *_geometric(A),
        A.HEStain(method="random_preset", p=0.5),
        A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.1, 1.0), p=0.2),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ], seed=seed)


RECIPES: Registry[Callable[[int], Transform | None]] = Registry(
    "augmentation", lambda message: ConfigError("--augmentation", message))
"""Recipe name -> factory of a seeded transform (None: the patch is used as it is)."""

RECIPES.register("none", lambda seed: None)
RECIPES.register("geometric", _geometric_recipe)
RECIPES.register("geometric+stain", _stain_recipe)
RECIPES.register("strong", _strong_recipe)


def build_augmentation(name: str, seed: int) -> Transform | None:
    """The seeded transform of recipe ``name``; a ``ConfigError`` listing the valid names for an unknown one."""
    return RECIPES.require(name)(seed)
