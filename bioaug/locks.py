"""One writer at a time: the lock a bioaug command holds on every store or run directory it writes.

The lock is an ``flock`` on ``.bioaug.lock`` inside the directory, which records the holder's pid, host and
command. The kernel releases an ``flock`` when its holder dies, so the file a killed run leaves behind is taken
over by the next writer without asking anyone to delete it; a second live writer fails at once with one line
naming the holder, instead of the two interleaving their shards and breaking the store for good.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import OutputError

LOCK_NAME = ".bioaug.lock"


def has_entries(directory: str | Path) -> bool:
    """Whether ``directory`` holds anything besides a writer's lock file."""
    return any(entry.name != LOCK_NAME for entry in Path(directory).iterdir())


@contextmanager
def writer_lock(directory: str | Path) -> Iterator[None]:
    """Hold the writer lock of ``directory`` (made, with its parents, if missing) for the block.

    Raises ``OutputError`` naming the holder when another process holds it. Directories made here are removed
    again if the block leaves them empty, so a run refused before it wrote anything leaves nothing behind.
    """
    directory = Path(directory)
    made = _make_dirs(directory)
    try:
        fd = _acquire(directory / LOCK_NAME, directory)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        yield
    finally:
        (directory / LOCK_NAME).unlink(missing_ok=True)  # unlinked while held: the next writer makes a new one
        os.close(fd)
        _remove_empty(made)


def _make_dirs(directory: Path) -> list[Path]:
    """Make ``directory`` and its missing parents; return those made, deepest first."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(made: list[Path]) -> None:
    for path in made:
        try:
            path.rmdir()
        except OSError:  # something was written there: it stays
            return


def _acquire(path: Path, directory: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive ``flock``, with this process recorded in it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise OutputError(directory, f"another bioaug run ({holder}) is writing here; wait for it to "
                                             f"finish or choose another output") from None
            raise OutputError(directory, f"cannot lock {LOCK_NAME} here ({exc.strerror})") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed this file as we locked it: lock the one that is there now
    record = {"pid": os.getpid(), "host": platform.node(),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(record).encode())
    return fd


def _holder(fd: int) -> str:
    """Who holds the lock, as its file records it."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {record['pid']} on {record['host']}: {record['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid not yet recorded"
