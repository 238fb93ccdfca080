"""Which patches a study shows: a balanced, seeded draw from a real and a synthetic store."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..store import PatchStore, check_compatible
from ..errors import StoreError
from .config import StudyConfig


@dataclass(frozen=True)
class Item:
    """One patch on the page. ``id`` is a random token, so it says nothing about ``source``."""

    id: str
    source: str
    store_index: int
    patch_id: str
    class_name: str | None

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "source": self.source, "store_index": self.store_index,
                "patch_id": self.patch_id, "class": self.class_name}


def check_stores(real: PatchStore, synthetic: PatchStore) -> None:
    """Refuse stores that are swapped, or that a reader could tell apart by patch size or scale alone."""
    for store, kind in ((real, "real"), (synthetic, "synthetic")):
        if store.header.kind != kind:
            raise StoreError(store.path, f"is a store of kind {store.header.kind!r}; the study needs a {kind} "
                                         f"store here")
    check_compatible(synthetic, real, classes=False, why="readers would tell real from synthetic by it")


def shared_classes(real: PatchStore, synthetic: PatchStore) -> list[str]:
    """Class names both stores hold, in the real store's order."""
    return [name for name in real.class_names if name in synthetic.class_names]


def class_quota(half: int, classes: list[str], rng: np.random.Generator) -> dict[str, int]:
    """``half`` split as evenly as possible over ``classes``; the seed picks which classes get one more."""
    quota = dict.fromkeys(classes, half // len(classes))
    for name in rng.permutation(classes)[: half % len(classes)]:
        quota[str(name)] += 1
    return quota


def _candidates(store: PatchStore, class_name: str | None) -> np.ndarray:
    if class_name is None:
        return np.arange(len(store))
    return np.flatnonzero(store.labels == store.class_names.index(class_name))


def _draw(store: PatchStore, need: int, class_name: str | None, rng: np.random.Generator) -> np.ndarray:
    candidates = _candidates(store, class_name)
    if len(candidates) < need:
        what = "patches" if class_name is None else f"patches of class {class_name!r}"
        raise StoreError(store.path, f"holds {len(candidates)} {what}; the study needs {need} (lower n)")
    return np.sort(rng.choice(candidates, size=need, replace=False))


def draw_items(real: PatchStore, synthetic: PatchStore, config: StudyConfig) -> list[Item]:
    """``config.n`` items, half from each store (and per class with ``per_class``), in a seeded random order.

    Item ids are 8 hex digits drawn without replacement from their own random stream.
    """
    check_stores(real, synthetic)
    draw_rng, order_rng, id_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(3))
    half = config.n // 2
    if config.per_class:
        classes = shared_classes(real, synthetic)
        if not classes:
            raise StoreError(synthetic.path, f"shares no class with {real.path}; per_class needs common classes "
                                             f"(turn it off for unlabelled stores)")
        quota: dict[str | None, int] = dict(class_quota(half, classes, draw_rng))
    else:
        quota = {None: half}
    drawn: list[tuple[str, PatchStore, int]] = []
    for source, store in (("real", real), ("synthetic", synthetic)):
        for class_name, need in quota.items():
            drawn += [(source, store, int(index)) for index in _draw(store, need, class_name, draw_rng)]
    ids = id_rng.choice(2 ** 32, size=len(drawn), replace=False)
    items = []
    for position, token in zip(order_rng.permutation(len(drawn)), ids):
        source, store, index = drawn[position]
        label = str(store.manifest["label"][index])
        items.append(Item(id=f"{int(token):08x}", source=source, store_index=index,
                          patch_id=str(store.manifest["patch_id"][index]), class_name=label or None))
    return items
