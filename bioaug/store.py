"""The patch store: the one format every stage reads and writes.

Layout of a store directory::

    store.json                 header: format version, patch size, µm/px, class names, kind, provenance,
                               per-class counts and a content hash (written last, atomically)
    shards/<name>/images.npy   uint8 array (N, H, W, 3), memory-mapped on read for random access
    shards/<name>/manifest.csv one row per patch: patch_id, slide, x, y, label, synthetic, extra columns
    shards/<name>/shard.json   what the shard was made from (``input_key``), its row count and hashes

Why ``.npy`` shards: they need nothing beyond numpy, ``np.load(mmap_mode="r")`` gives zero-copy random access
from many DataLoader workers, and a shard is a directory written under a temporary name and renamed in one
atomic step, so a crash never leaves half a shard and a rerun can skip every shard that exists. HDF5 or Zarr
would add a dependency and a locking story for no gain at the shard sizes tiling produces (one per slide region).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import OutputError, StoreError
from .locks import has_entries
from .progress import progress_bar
from .provenance import honour_umask, sha256_file, sha256_json, write_json_atomic

FORMAT_VERSION = 1
HEADER_NAME = "store.json"
SHARDS_DIR = "shards"
CORE_COLUMNS = ("patch_id", "slide", "x", "y", "label", "synthetic")
UNLABELLED = ""
_TMP_PREFIX = ".tmp-"
_SHARD_FILES = {"images": "images.npy", "manifest": "manifest.csv"}
#: Relative difference of µm/px below which two stores are at the same scale (what a JSON round trip or another
#: slide's rounding may leave; resampled stores are at exactly the µm/px they were asked for).
MPP_TOLERANCE = 1e-5


@dataclass
class StoreHeader:
    """What a store holds, independent of its shards.

    ``x``/``y`` in manifests are patch centres in level-0 pixels of the source slide; ``mpp`` is the physical
    resolution every patch was resampled to.
    """

    patch_size: int
    mpp: float
    class_names: list[str]
    kind: str = "real"
    feature_names: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    complete: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    content_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, path: Path, value: dict[str, Any]) -> "StoreHeader":
        if value.get("format_version") != FORMAT_VERSION:
            raise StoreError(path, f"format version {value.get('format_version')!r} is not {FORMAT_VERSION}")
        known = {name for name in cls.__dataclass_fields__}
        try:
            return cls(**{key: val for key, val in value.items() if key in known})
        except TypeError as exc:
            raise StoreError(path, f"header is missing a field ({exc})") from None


def _shard_root(store: Path) -> Path:
    return store / SHARDS_DIR


def read_header(store: str | Path) -> StoreHeader:
    """A store's header alone, without opening its shards (so it reads even when they no longer agree)."""
    path = Path(store) / HEADER_NAME
    if not path.is_file():
        raise StoreError(store, f"not a patch store (no {HEADER_NAME})")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(path, f"header is not valid JSON ({exc.__class__.__name__})") from None
    return StoreHeader.from_json(path, value)


class StoreWriter:
    """Creates or reopens a store and adds shards to it atomically.

    Reopening an existing store checks that patch size, µm/px, kind and class names agree with this run, so a
    resumed run never mixes incompatible patches. Leftover temporary shards of a killed run are removed.
    """

    def __init__(self, path: str | Path, header: StoreHeader) -> None:
        self.path = Path(path)
        existing = self.path / HEADER_NAME
        if existing.exists():
            old = read_header(self.path)
            for name in ("patch_size", "mpp", "kind", "class_names"):
                if getattr(old, name) != getattr(header, name):
                    raise StoreError(self.path, f"existing store has {name}={getattr(old, name)!r}, this run "
                                                f"asks {getattr(header, name)!r}; choose another output")
        elif self.path.exists() and has_entries(self.path):
            raise StoreError(self.path, "exists, is not empty and is not a patch store")
        self.header = header
        _shard_root(self.path).mkdir(parents=True, exist_ok=True)
        for stale in _shard_root(self.path).glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        header.complete = False
        write_json_atomic(existing, header.to_json())

    def is_complete(self, name: str, input_key: str) -> bool:
        """True when shard ``name`` was already written from the same inputs (same ``input_key``)."""
        meta = _shard_root(self.path) / name / "shard.json"
        if not meta.is_file():
            return False
        try:
            return json.loads(meta.read_text()).get("input_key") == input_key
        except json.JSONDecodeError:
            return False

    def write_shard(self, name: str, images: np.ndarray, rows: Sequence[dict[str, Any]], input_key: str,
                    meta: dict[str, Any] | None = None) -> Path:
        """Write one shard under a temporary name and rename it into place."""
        return write_shard(self.path, name, images, rows, input_key, self.header.patch_size, meta)

    def relabel(self, labels: Sequence[str]) -> None:
        """Replace every shard's label column, in store order, for labels known only after all shards exist
        (morphology clusters). Each manifest is rewritten under a temporary name and renamed."""
        offset = 0
        for shard in sorted(p for p in _shard_root(self.path).iterdir() if not p.name.startswith(_TMP_PREFIX)):
            rows = _read_manifest(shard / "manifest.csv")
            for row, label in zip(rows, labels[offset:offset + len(rows)]):
                row["label"] = label
            offset += len(rows)
            meta = json.loads((shard / "shard.json").read_text())
            tmp = shard / ".manifest.csv.tmp"
            _write_manifest(tmp, meta["columns"], rows)
            meta["manifest_sha256"] = sha256_file(tmp)
            os.replace(tmp, shard / "manifest.csv")
            write_json_atomic(shard / "shard.json", meta)
        if offset != len(labels):
            raise StoreError(self.path, f"{len(labels)} labels given for {offset} patches")

    def finalize(self) -> "PatchStore":
        """Record counts and the content hash in the header and mark the store complete."""
        store = PatchStore(self.path, require_complete=False)
        counts = {name: int((store.labels == index).sum()) for index, name in enumerate(self.header.class_names)}
        unlabelled = int((store.labels < 0).sum())
        if unlabelled:
            counts[UNLABELLED or "unlabelled"] = unlabelled
        self.header.counts = counts
        self.header.content_sha256 = store.compute_content_hash()
        self.header.complete = True
        write_json_atomic(self.path / HEADER_NAME, self.header.to_json())
        return PatchStore(self.path)


def write_shard(store: Path, name: str, images: np.ndarray, rows: Sequence[dict[str, Any]], input_key: str,
                patch_size: int, meta: dict[str, Any] | None = None) -> Path:
    """Write a shard of ``images`` (N, H, W, 3) uint8 with one manifest row each, atomically.

    A free function so that worker processes can write shards without holding a ``StoreWriter``.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (patch_size, patch_size, 3):
        raise StoreError(store, f"shard {name}: images of shape {images.shape}, expected (N, {patch_size}, "
                                f"{patch_size}, 3)")
    if len(rows) != len(images):
        raise StoreError(store, f"shard {name}: {len(rows)} manifest rows for {len(images)} images")
    root = _shard_root(store)
    root.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{name}-", dir=root))
    except OSError as exc:  # name the place that cannot be written, not the temporary name tried there
        raise OutputError(root, f"cannot write shard {name} here ({exc.strerror})") from None
    final = root / name
    try:
        honour_umask(tmp, directory=True)
        np.save(tmp / "images.npy", images)
        columns = list(CORE_COLUMNS) + sorted({key for row in rows for key in row} - set(CORE_COLUMNS))
        _write_manifest(tmp / "manifest.csv", columns,
                        [{"patch_id": f"{name}/{index}", "synthetic": 0, "label": UNLABELLED, **row}
                         for index, row in enumerate(rows)])
        shard_meta = {"name": name, "input_key": input_key, "count": len(rows), "columns": columns,
                      "images_sha256": sha256_file(tmp / "images.npy"),
                      "manifest_sha256": sha256_file(tmp / "manifest.csv"), **(meta or {})}
        write_json_atomic(tmp / "shard.json", shard_meta)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a short write (numpy's "requested and written")
            raise OutputError(root, f"cannot write shard {name} ({exc.strerror or exc}; is the disk full?); "
                                    f"free space and rerun the same command to resume") from None
        raise
    return final


def _writer_of(header: StoreHeader) -> str:
    """The command whose run writes a store of this kind (for the 'incomplete store' message)."""
    if header.kind == "synthetic":
        return "bioaug augment"
    return "bioaug evaluate" if "subset_key" in header.provenance else "bioaug tile"


def _open_shard(shard: Path, patch_size: int) -> tuple[dict[str, Any], np.ndarray, list[dict[str, str]]]:
    """A shard's record, memory-mapped images and manifest rows, after checking that they agree.

    Cheap checks only (no hashing): ``shard.json`` is readable, ``images.npy`` is uint8 (count, patch, patch,
    3) and exactly as long as that shape needs, and the manifest has one row per image.
    """
    try:
        meta = json.loads((shard / "shard.json").read_text())
        count = int(meta["count"])
        for key in ("images_sha256", "manifest_sha256"):
            str(meta[key])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"{exc.__class__.__name__}: {exc}"
        raise StoreError(shard, f"unreadable shard.json ({reason})") from None
    path = shard / "images.npy"
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            data_offset = handle.tell()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise StoreError(shard, f"unreadable images.npy ({reason})") from None
    expected = (count, patch_size, patch_size, 3)
    if tuple(shape) != expected or dtype != np.uint8 or fortran:
        raise StoreError(shard, f"images.npy holds {dtype}{'(Fortran order)' if fortran else ''} of shape "
                                f"{tuple(shape)}, shard.json and the header promise uint8 of shape {expected}")
    size, needed = path.stat().st_size, data_offset + int(np.prod(expected))
    if size != needed:
        raise StoreError(shard, f"images.npy is {size} bytes, its shape needs {needed} (truncated or padded)")
    images = np.load(path, mmap_mode="r")
    try:
        rows = _read_manifest(shard / "manifest.csv")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StoreError(shard, f"unreadable manifest.csv ({exc.__class__.__name__})") from None
    if len(rows) != count:
        raise StoreError(shard, f"manifest.csv has {len(rows)} rows for {count} images")
    return meta, images, rows


def _write_manifest(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="raise")
        writer.writeheader()
        writer.writerows(rows)


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _parse_column(values: list[str]) -> np.ndarray:
    """A manifest column as floats when every value parses, else as strings."""
    try:
        return np.asarray([float(v) if v != "" else np.nan for v in values], dtype=np.float64)
    except ValueError:
        return np.asarray(values, dtype=object)


class PatchStore:
    """Read access to a patch store: header, manifest columns, labels and memory-mapped images.

    Rows are ordered by shard name, then by position in the shard, so indices are stable across reads.
    """

    def __init__(self, path: str | Path, *, require_complete: bool = True) -> None:
        self.path = Path(path)
        self.header = read_header(self.path)
        if require_complete and not self.header.complete:
            raise StoreError(self.path, f"store is incomplete: the {_writer_of(self.header)} run that writes it "
                                        f"did not finish; rerun the same command to resume")
        self._shards: list[tuple[str, np.ndarray]] = []
        self._metas: list[dict[str, Any]] = []
        rows: list[dict[str, str]] = []
        offsets = [0]
        root = _shard_root(self.path)
        shards = sorted(p for p in root.iterdir() if not p.name.startswith(_TMP_PREFIX)) if root.is_dir() else []
        for shard in shards:
            meta, images, shard_rows = _open_shard(shard, self.header.patch_size)
            self._shards.append((shard.name, images))
            self._metas.append(meta)
            rows.extend(shard_rows)
            offsets.append(offsets[-1] + len(images))
        self._offsets = np.asarray(offsets)
        if self.header.complete and self.header.content_sha256 and \
                self.compute_content_hash() != self.header.content_sha256:
            raise StoreError(self.path, "its shards do not match the content hash in store.json (a shard was "
                                        "added, removed or rewritten after the store was finished)")
        names = list(dict.fromkeys(key for row in rows for key in row)) or list(CORE_COLUMNS)
        self.manifest: dict[str, np.ndarray] = {
            name: _parse_column([row.get(name, "") for row in rows]) for name in names}
        for name in ("patch_id", "slide", "label"):
            self.manifest[name] = np.asarray([row.get(name, "") for row in rows], dtype=object)
        lookup = {name: index for index, name in enumerate(self.class_names)}
        self.labels = np.asarray([lookup.get(name, -1) for name in self.manifest["label"]], dtype=np.int64)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        """A store travels to other processes (Dask workers) by path, not by its images: the receiver reopens
        it from the shared filesystem and refuses it unless it has the same contents."""
        return _reopen, (str(self.path), self.content_hash)

    @property
    def class_names(self) -> list[str]:
        return list(self.header.class_names)

    @property
    def patch_size(self) -> int:
        return self.header.patch_size

    @property
    def mpp(self) -> float:
        return self.header.mpp

    @property
    def slides(self) -> np.ndarray:
        return self.manifest["slide"]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, index: int) -> tuple[np.ndarray, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"patch index {index} out of range for a store of {len(self)}")
        shard = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self._shards[shard][1], index - int(self._offsets[shard])

    def image(self, index: int) -> np.ndarray:
        """Patch ``index`` as an (H, W, 3) uint8 array."""
        images, local = self._locate(int(index))
        return np.array(images[local])

    def images(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """Patches as an (N, H, W, 3) uint8 array (all when ``indices`` is None)."""
        indices = np.arange(len(self)) if indices is None else np.asarray(list(indices), dtype=np.int64)
        size = self.patch_size
        out = np.zeros((len(indices), size, size, 3), np.uint8)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"patch index out of range for a store of {len(self)}")
        shard_of = np.searchsorted(self._offsets, indices, side="right") - 1
        for shard in np.unique(shard_of):
            chosen = shard_of == shard
            out[chosen] = self._shards[shard][1][indices[chosen] - self._offsets[shard]]
        return out

    def features(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Per-patch feature matrix (N, F) from the manifest columns named in the header."""
        names = list(names or self.header.feature_names)
        if not names:
            return np.zeros((len(self), 0))
        return np.stack([np.asarray(self.manifest[n], dtype=np.float64) for n in names], axis=1)

    def compute_content_hash(self) -> str:
        """SHA-256 over the header's defining fields and every shard's recorded hashes."""
        digest = hashlib.sha256(sha256_json({"patch_size": self.patch_size, "mpp": self.mpp,
                                             "class_names": self.class_names, "kind": self.header.kind}).encode())
        for (name, _), meta in zip(self._shards, self._metas):
            digest.update(f"{name}:{meta['images_sha256']}:{meta['manifest_sha256']}".encode())
        return digest.hexdigest()

    def verify(self, *, progress: bool = True) -> None:
        """Hash every shard's files and compare them with the SHA-256 recorded in its ``shard.json``.

        Opening a store already checks each shard's shape, dtype, size and row count and that the recorded
        hashes add up to the header's content hash; this reads every byte, so a model's recorded store hash
        proves which patches it saw. Raises ``StoreError`` naming the first shard whose files changed.
        """
        root = _shard_root(self.path)
        files = [(root / name, meta, kind) for (name, _), meta in zip(self._shards, self._metas)
                 for kind in ("images", "manifest")]
        sizes = [(shard / _SHARD_FILES[kind]).stat().st_size for shard, _, kind in files]
        with progress_bar(total=round(sum(sizes) / 2 ** 20, 1), desc=f"verify {self.path.name}", unit="MiB",
                          disable=not progress) as bar:
            for (shard, meta, kind), size in zip(files, sizes):
                if sha256_file(shard / _SHARD_FILES[kind]) != meta[f"{kind}_sha256"]:
                    raise StoreError(shard, f"{_SHARD_FILES[kind]} does not match the SHA-256 in shard.json (changed "
                                            f"after it was written); re-create the store or restore the shard")
                bar.update(round(size / 2 ** 20, 1))

    @property
    def content_hash(self) -> str:
        """The content hash recorded at finalize; identifies exactly which patches a model saw."""
        return self.header.content_sha256 or self.compute_content_hash()


def _reopen(path: str, content_hash: str) -> PatchStore:
    """The store at ``path``, which must still hold ``content_hash`` (the other side of pickling a store)."""
    store = PatchStore(path)
    if store.content_hash != content_hash:
        raise StoreError(path, f"changed while in use: content hash {store.content_hash[:12]}, expected "
                               f"{content_hash[:12]}")
    return store


def check_compatible(store: PatchStore, other: Any, *, classes: bool = True, why: str = "") -> None:
    """Refuse ``store`` for use with ``other`` unless their patches have the same size, µm/px and (with
    ``classes``) class names, in order.

    ``other`` is a store, or anything else with ``path``, ``patch_size``, ``class_names`` and ``mpp`` (None when
    not known, as for a generator, whose patches take the µm/px of the store they join). µm/px are compared
    within ``MPP_TOLERANCE``.

    Raises
    ------
    StoreError
        One line naming ``store``'s path, the difference and ``other``'s path, then ``why`` it matters if given.
    """
    if store.patch_size != other.patch_size:
        problem = f"has {store.patch_size} px patches, but {other.path} has {other.patch_size} px patches"
    elif other.mpp is not None and not math.isclose(store.mpp, other.mpp, rel_tol=MPP_TOLERANCE):
        problem = f"is at {store.mpp:g} µm/px, but {other.path} is at {other.mpp:g} µm/px"
    elif classes and list(store.class_names) != list(other.class_names):
        problem = f"has classes {list(store.class_names)}, but {other.path} has {list(other.class_names)}"
    else:
        return
    raise StoreError(store.path, f"{problem}; {why}" if why else problem)


def subset_store(store: PatchStore, indices: Sequence[int], out: str | Path, *, provenance: dict[str, Any],
                 shard_size: int = 8192) -> PatchStore:
    """Write the patches ``indices`` of ``store`` (images, manifest rows, class names) as a new store ``out``.

    Used for a fold's training patches, so a generator trained on them records exactly the slides it saw.
    An existing complete store at ``out`` made from the same source and indices is reused as it is.
    """
    out = Path(out)
    indices = np.asarray(indices, dtype=np.int64)
    key = sha256_json({"source": store.content_hash, "indices": indices.tolist()})
    if (out / HEADER_NAME).exists():
        done = read_header(out)
        if done.complete and done.provenance.get("subset_key") == key:
            return PatchStore(out)
        shutil.rmtree(out)
    header = StoreHeader(patch_size=store.patch_size, mpp=store.mpp, class_names=store.class_names,
                         kind=store.header.kind, feature_names=list(store.header.feature_names),
                         provenance={**provenance, "source_store": str(store.path.resolve()),
                                     "source_sha256": store.content_hash, "subset_key": key})
    writer = StoreWriter(out, header)
    columns = [name for name in store.manifest if name != "patch_id"]
    for number, start in enumerate(range(0, len(indices), shard_size)):
        chosen = indices[start:start + shard_size]
        rows = [{name: manifest_value(store.manifest[name][i]) for name in columns} for i in chosen]
        writer.write_shard(f"subset.{number:04d}", store.images(chosen), rows, input_key=key)
    return writer.finalize()


def manifest_value(value: Any) -> Any:
    """A manifest cell as written: integral floats without a trailing ``.0`` (labels, flags, pixel centres)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
