"""The error family every stage raises for bad input.

The CLI prints a ``BioaugError`` as one line (no traceback) and exits non-zero, so each message names the
offending input and the problem in a single sentence.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path


class BioaugError(Exception):
    """A user-facing problem with an input: a file, an option or a configuration."""

    def __init__(self, source: str | Path | None, problem: str) -> None:
        self.source = None if source is None else str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)

    def __reduce__(self):  # (source, problem), so errors raised in worker processes reach the caller intact
        return type(self), (self.source, self.problem)


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


class OutputError(BioaugError):
    """An output cannot be written where it was asked for (read-only place, a file where a directory goes)."""


def describe_os_error(exc: OSError) -> str | None:
    """One line naming the path of a file-system error and the problem, or None when it names no path.

    A path that cannot be made because one of its parents is a file is reported as that file, which is the
    thing to fix, rather than as the path below it.
    """
    if exc.filename is None:
        return None
    path = Path(os.fsdecode(exc.filename))
    if exc.errno == errno.ENOTDIR:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker}: is a file, but a directory is needed here"
    if exc.errno == errno.EISDIR:
        return f"{path}: is a directory, but a file is needed here"
    problem = exc.strerror or exc.__class__.__name__
    if exc.filename2 is not None:
        return f"{path} -> {os.fsdecode(exc.filename2)}: {problem}"
    return f"{path}: {problem}"
