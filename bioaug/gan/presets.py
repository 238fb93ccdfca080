"""Generator presets by name: the registry that ``TrainConfig.preset`` points into (as timm's model registry).

A preset names a pair of networks, a class-conditional generator and a projection discriminator, and their
size-dependent defaults. It is torch-free: the classes are named as ``"module:Class"`` strings and imported
only when a network is built, so ``bioaug train --help`` and config validation stay light. A new generator
family plugs in with one :func:`register_preset` call; the trainer, the checkpoint, ``augment`` and
``evaluate`` rebuild it from the name a run records.

Both classes are constructed as ``Class(num_classes, patch_size, *, z_dim=..., channels=..., max_channels=...)``
(the discriminator without ``z_dim``). The generator must expose ``embed`` (an ``nn.Embedding`` whose output is
the only way the class enters, so class mixtures can replace it), ``z_dim`` and ``patch_size``; the
discriminator's ``forward(x, labels)`` must score rows labelled -1 without their class term (see
:func:`bioaug.gan.networks.project`). A discriminator that regularises itself declares ``reconstructs = True``
and then also takes ``forward(x, labels, reconstruct=n)``, returning the scores and a loss on its first ``n``
rows (the reals) that the trainer adds to the discriminator's (see :mod:`bioaug.gan.fastgan`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..registry import Registry, load_target

#: Per patch size: channels at full resolution (doubled at every halving, up to ``max_channels``) and the
#: global batch. With the plain networks at 32 px this is a 1.5M-parameter generator of about 0.1 GFLOP per
#: image, which trains at about a hundred images/s per CPU core; 64 and 128 px are sized for a GPU. The
#: residual networks use the same widths, with two convolutions and a shortcut per stage, and so do the FastGAN
#: ones (about twice the plain networks' CPU time per image: benchmarks/results/gan_throughput.json).
SIZE_DEFAULTS: dict[int, dict[str, int]] = {
    32: {"channels": 32, "max_channels": 256, "batch_size": 64},
    64: {"channels": 32, "max_channels": 256, "batch_size": 64},
    128: {"channels": 32, "max_channels": 512, "batch_size": 32},
}
#: The options a preset's size defaults fill in when they are left unset.
SIZED_OPTIONS = ("channels", "max_channels", "batch_size")


@dataclass(frozen=True)
class Preset:
    """A named generator/discriminator pair and its defaults per patch size."""

    name: str
    summary: str
    generator: str
    discriminator: str
    size_defaults: dict[int, dict[str, int]] = field(default_factory=dict)
    #: ``TrainConfig.ema_stats`` when left unset: which batch-norm statistics the sampling EMA keeps.
    ema_stats: str = "training"
    #: ``TrainConfig.lecam`` when left unset: the weight of the LeCam regulariser.
    lecam: float = 0.0
    #: The smallest patch the networks can be built for (4 * 2**n pixels, and never below 16).
    min_patch_size: int = 16

    def generator_class(self) -> Any:
        """The generator class (imports its module, and torch, on first use)."""
        return load_target(self.generator)

    def discriminator_class(self) -> Any:
        """The discriminator class."""
        return load_target(self.discriminator)


PRESETS: Registry[Preset] = Registry("generator", lambda message: ConfigError("--preset", message))


def register_preset(preset: Preset) -> Preset:
    """Add ``preset`` to the registry under its name; a name can be registered once."""
    return PRESETS.register(preset.name, preset)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``ConfigError`` listing the valid names otherwise."""
    return PRESETS.require(name)


register_preset(Preset(
    "plain", "one convolution per stage: the first edition's networks, fast on a CPU (tests and the demo)",
    "bioaug.gan.networks:Generator", "bioaug.gan.networks:Discriminator", SIZE_DEFAULTS,
    # measured on the fold-0 10% CRC cell at 1,800 CPU s: Fréchet 167 -> 69, two-sample accuracy 0.835 -> 0.776
    # (docs/results/ema-stats); the residual networks do better with the training statistics (47 against 95)
    ema_stats="standing",
    # the same cell with standing statistics: two-sample accuracy 0.780 -> 0.745 (docs/results/generator-choice-lecam)
    lecam=0.3))
register_preset(Preset(
    "resnet", "residual blocks (SNGAN/BigGAN family): conditional batch norm and skip-z in the generator, "
              "spectral norm in both networks",
    "bioaug.gan.residual:ResidualGenerator", "bioaug.gan.residual:ResidualDiscriminator", SIZE_DEFAULTS))
register_preset(Preset(
    "fastgan", "FastGAN family (Liu et al. 2021): skip-layer excitation in the generator, a discriminator "
               "regularised by rebuilding its input from its own features",
    "bioaug.gan.fastgan:FastGenerator", "bioaug.gan.fastgan:FastDiscriminator", SIZE_DEFAULTS,
    min_patch_size=32,  # its discriminator decodes from a 16 px feature map, which needs a 32 px input
    # the quick profile's fold-0 cell at 1,800 CPU s: two-sample accuracy 0.928 -> 0.893, Fréchet 124 -> 74
    # (docs/results/generator-choice-32px)
    lecam=0.3))
