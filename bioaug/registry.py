"""``Registry``: the named members of a family that grows, such as evaluation arms, generator presets, label
sources, classifier networks, augmentation recipes and metrics.

Each family keeps one module-level registry; a new member registers itself where it is defined, and the code
that uses the family looks members up by name, so adding one touches nothing else. A registry reads like a
mapping from name to member, in registration order; ``require`` is the lookup for names that come from users,
whose failure is a one-line error listing the valid names. A config option naming a member takes the registry
as its ``choices`` (:func:`bioaug.config.option`), which is the one check of its value.

Members that need torch are registered by a ``"module:name"`` target (:func:`load_target`), so that configs can
list and check the names without importing it.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Members of ``family`` by name.

    ``error`` turns a message into the exception ``require`` raises for an unknown name (each family reports
    where the name came from: an option, a flag).
    """

    def __init__(self, family: str, error: Callable[[str], Exception]) -> None:
        self.family = family
        self._error = error
        self._members: dict[str, T] = {}

    def register(self, name: str, member: T) -> T:
        """Add ``member`` under ``name`` and return it; a name can be registered once."""
        if name in self._members:
            raise ValueError(f"{self.family} {name!r} is registered twice")
        self._members[name] = member
        return member

    def require(self, name: str) -> T:
        """The member called ``name``; the family's one-line error naming the valid names otherwise."""
        try:
            return self._members[name]
        except KeyError:
            raise self._error(f"unknown {self.family} {name!r}; valid: {', '.join(self._members)}") from None

    def __getitem__(self, name: str) -> T:
        return self._members[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}: {', '.join(self._members)})"


def load_target(target: str) -> Any:
    """The object a ``"module:name"`` target names, importing its module on first use."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
