"""Lazy exports for packages: names resolve to their defining module on first access.

``import bioaug`` (and building the command line's ``--help``) must not import torch, OpenSlide or
scikit-learn; packages list what they export and where it lives, and hand this module's ``__getattr__`` over.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` resolving ``exports`` (public name -> module path)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


class _StagePackage(types.ModuleType):
    """A stage package that is also called as its stage's function (see :func:`make_callable`)."""

    _stage_function: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, _, name = self._stage_function.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


def make_callable(package: str, function: str) -> None:
    """Make ``package`` callable as ``function`` (``"module:name"``, imported on the first call).

    ``bioaug.tile`` and ``bioaug.augment`` are both a package and the function users call
    (``bioaug.tile(slides, out, config)``). Importing the package, or any module in it, puts the package in the
    attribute's place on ``bioaug``; a callable package keeps ``bioaug.tile(...)`` working whatever was imported
    first.
    """
    module = sys.modules[package]
    module.__class__ = _StagePackage
    module._stage_function = function
