"""``TrainConfig``: every option of ``bioaug train``, with defaults for 32, 64 and 128 px patches.

Kept free of torch so that the command line can build ``--help`` and ``--dry-run`` without importing it.
Options whose default depends on the patch size are ``None`` until :meth:`TrainConfig.resolve` fills them in
from the preset's size defaults (:mod:`bioaug.gan.presets`); the resolved config is what a run records and
what a checkpoint holds.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import check_choices, flag, option
from ..devices import DEVICES
from ..errors import ConfigError
from ..registry import Registry
from .presets import PRESETS, SIZED_OPTIONS

DIFF_AUGMENTATIONS: Registry[str] = Registry("discriminator augmentation",
                                             lambda message: ConfigError("--diffaugment", message))
"""The differentiable augmentations of the images the discriminator sees, by name, in the order they are
applied, each as the ``"module:function"`` target of a function ``(images, p) -> images`` (see
:mod:`bioaug.gan.diffaugment`): named here, and imported with torch only when training, so that configs stay
light.
"""
# stain first: it models the slide, the others the view of it
for _name in ("stain", "color", "translation", "cutout"):
    DIFF_AUGMENTATIONS.register(_name, f"bioaug.gan.diffaugment:{_name}")

PRECISIONS = ("auto", "fp32", "bf16")

UNLABELLED_USES = ("ignore", "discriminator")
EMA_STATS = ("standing", "training")
BUDGET_CLOCKS = ("wall", "cpu")
#: Smallest patch the networks handle: two stages of 2x up/down sampling from their 4x4 base.
MIN_PATCH_SIZE = 16


def trainable_patch_size(patch_size: int) -> bool:
    """Whether the GAN's networks can be built for ``patch_size``: 4 * 2**n pixels, at least ``MIN_PATCH_SIZE``."""
    return patch_size >= MIN_PATCH_SIZE and 4 * 2 ** ((patch_size // 4).bit_length() - 1) == patch_size


@dataclass
class TrainConfig:
    """Options for training the class-conditional GAN (``bioaug train``).

    Options marked ``resumable`` may differ when a run is resumed; every other option shapes the networks or
    the training trajectory and must match the checkpoint, so that a resumed run is the run it continues.
    """

    steps: int = option(20000, "training steps, each one discriminator and one generator update", resumable=True)
    time_budget: float = option(0.0, "stop after this many seconds of training, counted over resumes, even "
                                     "before --steps (0: no limit); the steps done are recorded",
                                resumable=True)
    budget_clock: str = option("wall", "what --time-budget counts: 'wall' seconds, or 'cpu' seconds of this "
                                       "process over all its threads (fair between runs sharing a machine)",
                               choices=BUDGET_CLOCKS)
    preset: str = option("plain", "generator and discriminator networks by name (see bioaug.gan.presets)",
                         choices=PRESETS)
    batch_size: int | None = option(None, "global batch of real patches per step, split over torchrun ranks "
                                          "(None: by patch size, 64 up to 64 px, 32 at 128 px)")
    z_dim: int = option(128, "latent dimension of the generator")
    channels: int | None = option(None, "feature channels at full resolution, doubled at each halving up to "
                                        "max-channels (None: by preset and patch size, 32 for each)")
    max_channels: int | None = option(None, "cap on feature channels (None: by preset and patch size, 256 up "
                                            "to 64 px, 512 at 128 px)")
    lr_g: float = option(1e-4, "Adam learning rate of the generator")
    lr_d: float = option(4e-4, "Adam learning rate of the discriminator (4 x lr-g, the two time-scale rule: "
                               "with equal rates the generator outruns the discriminator and collapses)")
    d_steps: int = option(2, "discriminator updates per generator update (SNGAN's n_dis), each on a new batch")
    betas: list[float] = option([0.0, 0.99], "Adam betas (beta1 0 avoids momentum chasing a moving opponent)")
    lecam: float | None = option(None, "weight of the LeCam regulariser on discriminator scores (Tseng et al. "
                                       "2021, who used 0.3; 0: off; None: by preset, 0.3 for plain and "
                                       "fastgan, where it was measured to help, 0 for resnet)")
    lecam_decay: float = option(0.99, "decay of the moving averages of D(real) and D(fake) that LeCam anchors to")
    unlabelled: str = option("ignore", "what unlabelled rows (label -1) of the store train: 'discriminator' "
                                       "feeds them to the discriminator's class-independent term and the "
                                       "generator's realism through it; 'ignore' leaves them out",
                             choices=UNLABELLED_USES)
    unlabelled_fraction: float = option(0.5, "share of each batch drawn from unlabelled rows with "
                                             "--unlabelled discriminator (when the store has any)")
    ema_decay: float = option(0.999, "decay of the generator's exponential moving average used for sampling")
    ema_stats: str | None = option(None, "batch-norm statistics of the sampling average that checkpoints "
                                         "keep: 'standing' measures them on its own outputs, 'training' "
                                         "keeps the training generator's (None: by preset, standing for "
                                         "plain, training for the others)",
                                   choices=EMA_STATS, resumable=True)
    diffaugment: list[str] = option(["color", "translation", "cutout", "stain"], "differentiable "
                                    "augmentations (DiffAugment) of every image the discriminator sees",
                                    choices=DIFF_AUGMENTATIONS)
    diffaugment_p: float = option(0.0, "probability of each differentiable augmentation per image: start value "
                                       "with --ada, else fixed")
    ada: bool = option(True, "adapt the augmentation probability to discriminator overfitting (as ADA)")
    ada_target: float = option(0.6, "ADA target for E[sign(D(real))]; above it p rises, below it falls")
    ada_interval: int = option(4, "steps between adjustments of the augmentation probability")
    ada_kimg: float = option(100.0, "thousands of real images over which p can move from 0 to 1")
    seed: int = option(0, "seed for weights, latents, augmentation and data order")
    snapshot_every: int = option(500, "steps between sample grids and diversity checks", resumable=True)
    checkpoint_every: int = option(500, "steps between checkpoints", resumable=True)
    log_every: int = option(50, "steps between lines of log.jsonl and progress-bar updates", resumable=True)
    grid_columns: int = option(8, "samples per class (one row each) in sample grids", resumable=True)
    device: str = option("auto", "where to train: CUDA when present with auto", choices=DEVICES, resumable=True)
    precision: str = option("auto", "bf16 autocast: with auto on CUDA when supported, fp32 on the CPU; bf16 "
                                    "also on a CPU with bf16 kernels (AVX-512 BF16, AMX)",
                            choices=PRECISIONS, resumable=True)
    channels_last: bool = option(True, "channels-last memory format (faster convolutions)", resumable=True)
    compile: bool = option(False, "torch.compile the networks (worth it for long GPU runs)", resumable=True)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the option's flag on a value no run could use."""
        check_choices(self)
        positive = ("steps", "d_steps", "batch_size", "z_dim", "channels", "max_channels", "ada_interval",
                    "snapshot_every", "checkpoint_every", "log_every", "grid_columns")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(flag(name), f"must be at least 1, got {value}")
        for name in ("lr_g", "lr_d", "ada_kimg"):
            if getattr(self, name) <= 0:
                raise ConfigError(flag(name), f"must be positive, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ConfigError(flag("betas"), f"needs two values in [0, 1), got {self.betas}")
        for name in ("time_budget", "lecam"):
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(flag(name), f"must be at least 0, got {getattr(self, name)}")
        if not 0 <= self.unlabelled_fraction < 1:
            raise ConfigError(flag("unlabelled_fraction"), f"must lie in [0, 1), got {self.unlabelled_fraction}")
        for name in ("diffaugment_p", "ema_decay", "lecam_decay"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(flag(name), f"must lie in [0, 1], got {getattr(self, name)}")
        if not 0 < self.ada_target < 1:
            raise ConfigError(flag("ada_target"), f"must lie in (0, 1), got {self.ada_target}")

    def resolve(self, patch_size: int) -> "TrainConfig":
        """A copy with the size-dependent defaults filled in for ``patch_size``.

        Raises ``ConfigError`` for a value no run could use (:meth:`validate`), when the networks cannot be built
        for that size (it must be 4 * 2**n, at least 16 or the preset's ``min_patch_size``) or when the preset
        has no defaults for it and the size-dependent options were left unset. The preset's name is looked up
        here, once: what it fills in comes from its own tables, which are not checked again.
        """
        self.validate()
        preset = PRESETS.require(self.preset)
        defaults = preset.size_defaults
        smallest = max(MIN_PATCH_SIZE, preset.min_patch_size)
        if not trainable_patch_size(patch_size) or patch_size < smallest:
            raise ConfigError(flag("preset"), f"no architecture for {patch_size} px patches: the {self.preset} "
                                              f"preset needs 4 * 2**n pixels, at least {smallest} (defaults exist "
                                              f"for {', '.join(map(str, defaults))})")
        missing = [name for name in SIZED_OPTIONS if getattr(self, name) is None]
        if missing and patch_size not in defaults:
            raise ConfigError(flag("preset"), f"no default architecture for {patch_size} px patches (defaults "
                                              f"exist for {', '.join(map(str, defaults))}); set "
                                              f"{', '.join(flag(name) for name in missing)}")
        resolved = dataclasses.replace(self, **{name: defaults[patch_size][name] for name in missing})
        if resolved.ema_stats is None:
            resolved.ema_stats = preset.ema_stats
        if resolved.lecam is None:
            resolved.lecam = preset.lecam
        return resolved

    def fixed_fields(self) -> list[str]:
        """Names of the options that must match a checkpoint for the run to resume it."""
        return [spec.name for spec in dataclasses.fields(self) if not spec.metadata.get("resumable")]
