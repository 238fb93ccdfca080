"""Lazy exports for packages: names resolve to their defining module on first access.

``import bioaug`` (and building the command line's ``--help``) must not import torch, OpenSlide or
scikit-learn; packages list what they export and where it lives, and hand this module's ``__getattr__`` over.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` resolving ``exports`` (public name -> module path)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
