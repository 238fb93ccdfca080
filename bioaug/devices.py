"""Where torch work runs: the device names every stage's config accepts, and the one place they become devices.

``auto`` takes CUDA when torch sees a GPU and the CPU otherwise; asking for ``cuda`` where there is none is a
one-line error before any work starts, not a failure deep inside a training step. Torch is imported only when a
device is resolved, so configs can name devices without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
"""The values of every ``device`` option."""


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``name``: one of ``DEVICES``, a torch device name (``"cuda:1"``) or a device;
    ``None`` is ``auto``.

    Raises
    ------
    ConfigError
        Naming ``--device`` when a CUDA device is asked for and torch sees none.
    """
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", f"{name} was asked for, but torch sees no CUDA device")
    return device
