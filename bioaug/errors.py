"""The error family every stage raises for bad input.

The CLI prints a ``BioaugError`` as one line (no traceback) and exits non-zero, so each message names the
offending input and the problem in a single sentence.
"""
from __future__ import annotations

from pathlib import Path


class BioaugError(Exception):
    """A user-facing problem with an input: a file, an option or a configuration."""

    def __init__(self, source: str | Path | None, problem: str) -> None:
        self.source = None if source is None else str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class SlideError(BioaugError):
    """A slide cannot be opened or read, or lacks what tiling needs (such as µm/px)."""


class LabelError(BioaugError):
    """A label source is malformed or does not match the slides."""


class StoreError(BioaugError):
    """A patch store is missing, incomplete or incompatible."""


class ConfigError(BioaugError):
    """An option or configuration value is invalid."""


class CheckpointError(BioaugError):
    """A training checkpoint is missing, corrupt or does not match its store."""
