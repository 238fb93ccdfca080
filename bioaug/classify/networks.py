"""A registry of MONAI classification networks addressable by name from a config.

Every network takes 2D RGB input (plus, optionally, a marker channel), ends in ``n_classes`` logits and starts
from random weights
(``pretrained=False``): bioaug never downloads weights. ResNets use a stride-2 first convolution
(``conv1_t_stride=2``), the usual choice that costs a quarter of MONAI's stride-1 default on small patches.
``resnet10-w0.5`` halves every stage's width (MONAI's ``widen_factor``): about ten times faster than
``resnet18`` on a CPU core, which is what makes five seeds per cell affordable there.
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # the registry's names are read by torch-free configs; networks import torch when built
    from torch import nn

from ..errors import ConfigError
from ..registry import Registry


def _resnet(depth: int, n_classes: int, in_channels: int, widen_factor: float = 1.0) -> nn.Module:
    from monai.networks import nets

    factory = getattr(nets, f"resnet{depth}")
    return factory(pretrained=False, spatial_dims=2, n_input_channels=in_channels, num_classes=n_classes,
                   conv1_t_stride=2, widen_factor=widen_factor)


def _densenet(name: str, n_classes: int, in_channels: int) -> nn.Module:
    from monai.networks import nets

    factory = {"densenet121": nets.DenseNet121, "densenet169": nets.DenseNet169}[name]
    return factory(spatial_dims=2, in_channels=in_channels, out_channels=n_classes, pretrained=False)


def _efficientnet(name: str, n_classes: int, in_channels: int) -> nn.Module:
    from monai.networks.nets import EfficientNetBN

    return EfficientNetBN(name, pretrained=False, spatial_dims=2, in_channels=in_channels, num_classes=n_classes)


NETWORKS: Registry[Callable[[int, int], "nn.Module"]] = Registry("network",
                                                                 lambda message: ConfigError("--network", message))
"""Network name -> factory taking the number of classes and of input channels."""

for _name, _factory in (
    ("densenet121", partial(_densenet, "densenet121")),
    ("densenet169", partial(_densenet, "densenet169")),
    ("resnet10", partial(_resnet, 10)),
    ("resnet10-w0.5", partial(_resnet, 10, widen_factor=0.5)),
    ("resnet18", partial(_resnet, 18)),
    ("resnet34", partial(_resnet, 34)),
    ("resnet50", partial(_resnet, 50)),
    ("efficientnet-b0", partial(_efficientnet, "efficientnet-b0")),
    ("efficientnet-b1", partial(_efficientnet, "efficientnet-b1")),
):
    NETWORKS.register(_name, _factory)


def build_network(name: str, n_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised MONAI network ``name`` mapping (N, in_channels, H, W) inputs to (N, n_classes) logits.

    ``in_channels`` is 3 for RGB, 4 with the nucleus marker channel (``bioaug.classify.model``).

    Raises
    ------
    ConfigError
        When ``name`` is not registered (the message lists the valid names) or ``n_classes`` < 2.
    """
    factory = NETWORKS.require(name)
    if n_classes < 2:
        raise ConfigError("network", f"a classifier needs at least 2 classes, got {n_classes}")
    return factory(n_classes, in_channels)
