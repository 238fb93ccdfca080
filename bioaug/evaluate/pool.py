"""The unlabelled pool: nuclei the detector finds on a fold's training slides, outside the label budget.

A label budget limits labels, not images. ``bioaug tile --label-by none`` on the same slides gives a store of
detected nuclei without labels; per (fold, budget) cell the pool is its patches on the fold's training slides
that the budget did not label. The pseudo-label baseline and the generators may use it; test slides never
enter it. Slides are identified by name *and* by the SHA-256 of the slide file each store recorded when it was
tiled, so a renamed copy of a test image is recognised and refused rather than silently used.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, StoreError
from ..provenance import sha256_json
from ..store import UNLABELLED, PatchStore, StoreHeader, StoreWriter, check_compatible, manifest_value
from .cells import PREDICTION_BATCH

if TYPE_CHECKING:
    from torch import nn


def slide_hashes(store: PatchStore) -> dict[str, str]:
    """Slide name -> SHA-256 of its file, as the tiling run recorded it (empty for stores that record none)."""
    inputs = store.header.provenance.get("inputs", {})
    return {str(name): str(value) for name, value in inputs.items() if not str(name).startswith("labels:")}


def check_pool(pool: PatchStore, store: PatchStore, source: str | Path) -> None:
    """Refuse a pool that is not of the labelled store's slides, patch size and resolution.

    Raises
    ------
    StoreError
        Another patch size or µm/px (:func:`~bioaug.store.check_compatible`).
    ConfigError
        One line naming ``source``: a slide whose file content equals a labelled slide of another name (a
        renamed copy, which could put a test image in the pool); a slide with the same name but other content;
        or slides the labelled store does not hold.
    """
    check_compatible(pool, store, classes=False)
    pool_hashes, labelled_hashes = slide_hashes(pool), slide_hashes(store)
    by_content = {digest: name for name, digest in labelled_hashes.items()}
    for name in sorted(set(map(str, pool.slides))):
        digest = pool_hashes.get(name)
        twin = by_content.get(digest) if digest else None
        if twin is not None and twin != name:
            raise ConfigError(source, f"slide {name} has the same content as labelled slide {twin}: a renamed "
                                      "copy could put a test image in the pool; tile the pool from the same files")
        if digest and name in labelled_hashes and labelled_hashes[name] != digest:
            raise ConfigError(source, f"slide {name} differs in content from the labelled store's {name}")
    labelled = set(map(str, store.slides)) | set(labelled_hashes)
    other = sorted(set(map(str, pool.slides)) - labelled)
    if other:
        raise ConfigError(source, f"holds {len(other)} slide(s) the labelled store does not (e.g. "
                                  f"{', '.join(other[:3])}); the pool must come from the same slides")


def pool_indices(pool: PatchStore, training_slides: set[str], budget_slides: set[str]) -> np.ndarray:
    """Pool rows on the fold's training slides that the label budget did not take."""
    keep = training_slides - budget_slides
    return np.flatnonzero(np.isin(np.asarray(pool.slides, dtype=str), sorted(keep)))


def pool_predictions(pool: PatchStore, model: nn.Module, device: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, confidence) of every ``pool`` patch under a cell's classifier ``model``."""
    from ..classify import predict_proba

    probabilities = predict_proba(model, pool.images(), batch_size=PREDICTION_BATCH, device=device)
    return probabilities.argmax(1), probabilities.max(1)


def check_pool_leakage(pool_store: PatchStore, test_slides: set[str], test_hashes: set[str],
                       source: str | Path) -> None:
    """Refuse a cell's pool store holding a test slide, by name or by the content hash of its file."""
    shared = sorted(set(map(str, pool_store.slides)) & test_slides)
    hashes = slide_hashes(PatchStore(pool_store.header.provenance["source_store"])) \
        if "source_store" in pool_store.header.provenance else {}
    copies = sorted(name for name in set(map(str, pool_store.slides)) if hashes.get(name) in test_hashes)
    if shared or copies:
        raise StoreError(source, f"unlabelled pool holds test slide(s) {', '.join((shared + copies)[:3])}: it may "
                                 "only hold the fold's training slides")


def write_labelled_union(train: PatchStore, pool: PatchStore, pool_rows: np.ndarray, pool_labels: np.ndarray,
                         out: Path, *, provenance: dict[str, Any]) -> PatchStore:
    """A store of every ``train`` patch plus pool rows ``pool_rows`` labelled ``pool_labels`` (-1: unlabelled).

    The generator of a cell trains on it, so its content hash records exactly which pool patches, with which
    pseudo-labels, it saw. Reused when a complete store from the same inputs exists at ``out``.
    """
    key = sha256_json({"train": train.content_hash, "pool": pool.content_hash, "rows": pool_rows.tolist(),
                       "labels": pool_labels.tolist()})
    if (out / "store.json").is_file():
        try:
            done = PatchStore(out)
            if done.header.provenance.get("union_key") == key:
                return done
        except StoreError:
            pass
    header = StoreHeader(patch_size=train.patch_size, mpp=train.mpp, class_names=train.class_names,
                         kind=train.header.kind, feature_names=list(train.header.feature_names),
                         provenance={**provenance, "union_key": key, "train_store_sha256": train.content_hash,
                                     "pool_store_sha256": pool.content_hash, "pool_rows": int(len(pool_rows)),
                                     "pool_labelled": int((pool_labels >= 0).sum())})
    if out.exists():
        shutil.rmtree(out)
    writer = StoreWriter(out, header)
    columns = [name for name in train.manifest if name != "patch_id"]
    train_rows = [{name: manifest_value(train.manifest[name][i]) for name in columns} for i in range(len(train))]
    writer.write_shard("labelled", train.images(), train_rows, input_key=key)
    names = train.class_names
    rows = []
    for row, label in zip(pool_rows, pool_labels):
        values = {name: manifest_value(pool.manifest[name][row]) if name in pool.manifest else "" for name in columns}
        values["label"] = names[label] if label >= 0 else UNLABELLED
        rows.append(values)
    if len(pool_rows):
        writer.write_shard("pool", pool.images(pool_rows), rows, input_key=key)
    return writer.finalize()

