"""What every run records beside its outputs: resolved config, seeds, package versions and input hashes."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from .errors import OutputError

_PACKAGES = ("bioaug", "torch", "monai", "numpy", "scikit-image", "scikit-learn", "openslide-python",
             "openslide-bin", "tifffile", "albumentations")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks so large slides stay out of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hex SHA-256 of a JSON-serialisable value in canonical form (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results; missing ones are left out."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_record(config: dict[str, Any], inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """A provenance block: what ran, when, with which config, software and inputs."""
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "versions": package_versions(),
        "config": config,
        "inputs": inputs or {},
    }


def current_umask() -> int:
    """This process's umask, read without changing it where Linux reports it (a swap would briefly let other
    threads create files under umask 0)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path, *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open()`` (or ``mkdir()``) would have: 0666 (0777) less the umask.

    ``tempfile`` makes its files 0600 and its directories 0700, and a rename keeps the mode, so without this a
    store, a report or a run written atomically would be unreadable to a lab-mate or to a Dask worker running
    as another user on the shared filesystem.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` (parents created) that replaces ``path`` only if the block
    completes, and is removed otherwise: every file bioaug writes appears whole or not at all."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, "is a directory, but a file is needed here")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the place that cannot be written, not the temporary name tried there
        raise OutputError(path.parent, f"cannot write {path.name} here ({exc.strerror})") from None
    os.close(fd)
    try:
        honour_umask(tmp)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is not None:
            raise
        # a write that names no file is the write of this one: a full disk, or a quota
        raise OutputError(path, f"cannot be written ({exc.strerror or exc}; is the disk full?)") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_output_dir(path: str | Path) -> None:
    """Raise ``OutputError`` unless ``path`` is, or can become, a directory bioaug can write in.

    Checked before a stage does any work, so that a read-only place or a file in the way is reported at once
    instead of after minutes of tiling or training. Nothing is left behind: the probe is an unnamed
    temporary file in the nearest existing directory.
    """
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(existing, "is a file, but a directory is needed here")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = "" if existing == path else f" in {existing}"
        raise OutputError(path, f"cannot be written{where} ({exc.strerror})") from None


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, value: Any) -> None:
    """Write JSON to ``path`` atomically, so readers never see half a file."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
