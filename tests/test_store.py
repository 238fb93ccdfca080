"""The patch store contract: atomic shards, resumable writers, stable reads, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bioaug.datasets import PatchDataset
from bioaug.errors import StoreError
from bioaug.store import PatchStore, StoreHeader, StoreWriter, check_compatible, write_shard
from conftest import make_disc_store


def test_round_trip_labels_images_and_header(tmp_path):
    store = make_disc_store(tmp_path / "s", per_class=8, slides=2)
    assert len(store) == 24
    assert store.header.complete
    assert store.header.counts == {"small": 8, "large": 8, "pale": 8}
    assert store.images([0, 5]).shape == (2, 32, 32, 3)
    assert set(store.slides) == {"slide0", "slide1"}
    assert store.features().shape == (24, 1)
    again = PatchStore(tmp_path / "s")
    np.testing.assert_array_equal(again.labels, store.labels)
    np.testing.assert_array_equal(again.image(7), store.image(7))


def test_content_hash_changes_with_content(tmp_path):
    first = make_disc_store(tmp_path / "a", per_class=4, slides=1, seed=0)
    same = make_disc_store(tmp_path / "b", per_class=4, slides=1, seed=0)
    other = make_disc_store(tmp_path / "c", per_class=4, slides=1, seed=1)
    assert first.content_hash == same.content_hash != other.content_hash


def test_incomplete_store_is_refused_and_stale_temporaries_removed(tmp_path):
    header = StoreHeader(patch_size=8, mpp=0.5, class_names=["a"])
    writer = StoreWriter(tmp_path / "s", header)
    stale = tmp_path / "s" / "shards" / ".tmp-x-123"
    stale.mkdir()
    with pytest.raises(StoreError, match="incomplete"):
        PatchStore(tmp_path / "s")
    StoreWriter(tmp_path / "s", StoreHeader(patch_size=8, mpp=0.5, class_names=["a"]))
    assert not stale.exists()
    assert writer.is_complete("x", "k") is False


def test_reopening_with_other_patch_size_fails(tmp_path):
    StoreWriter(tmp_path / "s", StoreHeader(patch_size=8, mpp=0.5, class_names=["a"]))
    with pytest.raises(StoreError, match="patch_size"):
        StoreWriter(tmp_path / "s", StoreHeader(patch_size=16, mpp=0.5, class_names=["a"]))


def test_shard_write_is_atomic_on_failure(tmp_path):
    header = StoreHeader(patch_size=8, mpp=0.5, class_names=["a"])
    StoreWriter(tmp_path / "s", header)
    with pytest.raises(StoreError):
        write_shard(tmp_path / "s", "bad", np.zeros((2, 8, 8, 3), np.uint8), [{"slide": "a"}], "k", 8)
    assert list((tmp_path / "s" / "shards").iterdir()) == []


def test_skip_marker_tracks_input_key(tmp_path):
    writer = StoreWriter(tmp_path / "s", StoreHeader(patch_size=8, mpp=0.5, class_names=["a"]))
    writer.write_shard("one", np.zeros((1, 8, 8, 3), np.uint8), [{"slide": "s", "x": 1, "y": 2, "label": "a"}], "k1")
    assert writer.is_complete("one", "k1") and not writer.is_complete("one", "k2")


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a patch store"):
        PatchStore(tmp_path)
    (tmp_path / "store.json").write_text("{broken")
    with pytest.raises(StoreError, match="not valid JSON"):
        PatchStore(tmp_path)
    (tmp_path / "store.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(StoreError, match="format version"):
        PatchStore(tmp_path)


def test_dataset_items(disc_store):
    item = PatchDataset(disc_store)[3]
    assert item["image"].shape == (3, 32, 32)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert int(item["label"]) == disc_store.labels[3]


def test_subset_store_keeps_the_chosen_patches_and_is_reused(disc_store, tmp_path):
    from bioaug.store import subset_store

    chosen = np.flatnonzero(np.isin(disc_store.slides, ["slide0", "slide2"]))
    subset = subset_store(disc_store, chosen, tmp_path / "subset", provenance={"fold": 0}, shard_size=10)
    assert len(subset) == len(chosen) and set(subset.slides) == {"slide0", "slide2"}
    np.testing.assert_array_equal(subset.images(), disc_store.images(chosen))
    np.testing.assert_array_equal(subset.labels, disc_store.labels[chosen])
    np.testing.assert_allclose(subset.features(), disc_store.features()[chosen])
    assert subset.header.provenance["source_sha256"] == disc_store.content_hash
    again = subset_store(disc_store, chosen, tmp_path / "subset", provenance={"fold": 0})
    assert again.content_hash == subset.content_hash
    other = subset_store(disc_store, chosen[:5], tmp_path / "subset", provenance={"fold": 0})
    assert len(other) == 5


# -- verification: the content hash is a promise ----------------------------------------------------------------

def _first_shard(store):
    return sorted((store.path / "shards").iterdir())[0]


def test_a_zeroed_shard_of_the_same_size_opens_but_fails_verification(tmp_path):
    store = make_disc_store(tmp_path / "s", per_class=8, slides=2)
    store.verify(progress=False)
    shard = _first_shard(store)
    images = np.load(shard / "images.npy", mmap_mode="r+")
    images[:] = 0
    images.flush()
    del images
    reopened = PatchStore(tmp_path / "s")  # shape, dtype and size still agree with shard.json
    with pytest.raises(StoreError, match="images.npy does not match the SHA-256") as caught:
        reopened.verify(progress=False)
    assert shard.name in str(caught.value)


def test_an_edited_manifest_fails_verification(tmp_path):
    store = make_disc_store(tmp_path / "s", per_class=8, slides=2)
    manifest = _first_shard(store) / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("small", "large", 1))
    with pytest.raises(StoreError, match="manifest.csv does not match"):
        PatchStore(tmp_path / "s").verify(progress=False)


@pytest.mark.parametrize("damage, message", [
    (lambda shard: np.save(shard / "images.npy", np.zeros((6, 16, 16, 3), np.uint8)), "shape"),
    (lambda shard: np.save(shard / "images.npy", np.zeros((6, 32, 32, 3), np.float32)), "float32"),
    (lambda shard: (shard / "images.npy").write_bytes((shard / "images.npy").read_bytes()[:-100]), "truncated"),
    (lambda shard: (shard / "images.npy").write_bytes(b"\0" * (shard / "images.npy").stat().st_size),
     "unreadable images.npy"),
    (lambda shard: (shard / "images.npy").unlink(), "unreadable images.npy"),
    (lambda shard: (shard / "manifest.csv").unlink(), "unreadable manifest.csv"),
    (lambda shard: (shard / "shard.json").write_text("{"), "unreadable shard.json"),
], ids=["wrong shape", "wrong dtype", "cut short", "zeroed header", "missing images", "missing manifest",
        "broken shard.json"])
def test_opening_checks_every_shard_against_its_record(tmp_path, damage, message):
    store = make_disc_store(tmp_path / "s", per_class=8, slides=4)
    shard = _first_shard(store)
    damage(shard)
    with pytest.raises(StoreError, match=message) as caught:
        PatchStore(tmp_path / "s")
    assert str(caught.value).startswith(str(shard))
    assert "\n" not in str(caught.value)


def test_a_removed_shard_breaks_the_content_hash(tmp_path):
    import shutil

    store = make_disc_store(tmp_path / "s", per_class=8, slides=2)
    shutil.rmtree(_first_shard(store))
    with pytest.raises(StoreError, match="do not match the content hash"):
        PatchStore(tmp_path / "s")


def test_an_incomplete_synthetic_store_names_augment(tmp_path):
    StoreWriter(tmp_path / "s", StoreHeader(patch_size=8, mpp=0.5, class_names=["a"], kind="synthetic"))
    with pytest.raises(StoreError, match="the bioaug augment run that writes it did not finish"):
        PatchStore(tmp_path / "s")


def test_training_refuses_a_store_whose_data_changed(tmp_path):
    from bioaug.gan import TrainConfig, train

    store = make_disc_store(tmp_path / "s", per_class=8, slides=2)
    images = np.load(_first_shard(store) / "images.npy", mmap_mode="r+")
    images[0] = 255 - images[0]
    images.flush()
    del images
    config = TrainConfig(steps=1, batch_size=6, channels=8, max_channels=16, z_dim=8, device="cpu")
    with pytest.raises(StoreError, match="does not match the SHA-256"):
        train(tmp_path / "s", tmp_path / "run", config, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_store_pickles_by_path_and_is_refused_when_its_contents_changed(tmp_path):
    import pickle
    import shutil

    store = make_disc_store(tmp_path / "store")
    data = pickle.dumps(store)
    assert len(data) < 1000  # the path and the content hash, not the images
    again = pickle.loads(data)
    assert again.content_hash == store.content_hash and np.array_equal(again.images(), store.images())
    shutil.rmtree(tmp_path / "store")
    make_disc_store(tmp_path / "store", seed=9)  # another store at the same path
    with pytest.raises(StoreError, match="changed while in use") as error:
        pickle.loads(data)
    assert str(tmp_path / "store") in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("change, classes, message", [
    ({}, True, None),
    ({"mpp": 0.5 * (1 + 1e-7)}, True, None),  # a rounding, not another scale
    ({"class_names": ["large", "small", "pale"]}, False, None),
    ({"patch_size": 48}, True, "has 48 px patches, but {other} has 32 px patches"),
    ({"mpp": 0.25}, True, "is at 0.25 µm/px, but {other} is at 0.5 µm/px"),
    ({"mpp": 0.25}, False, "is at 0.25 µm/px, but {other} is at 0.5 µm/px"),
    ({"class_names": ["large", "small", "pale"]}, True,
     "has classes ['large', 'small', 'pale'], but {other} has ['small', 'large', 'pale']"),
])
def test_stores_are_compatible_only_at_one_patch_size_scale_and_class_order(tmp_path, change, classes, message):
    other = make_disc_store(tmp_path / "other", per_class=4, slides=1)
    store = make_disc_store(tmp_path / "store", per_class=4, slides=1, patch_size=change.get("patch_size", 32))
    for name, value in change.items():
        setattr(store.header, name, value)
    if message is None:
        check_compatible(store, other, classes=classes)
        return
    with pytest.raises(StoreError) as caught:
        check_compatible(store, other, classes=classes, why="they train one classifier")
    assert str(caught.value) == f"{store.path}: {message.format(other=other.path)}; they train one classifier"
