"""``bioaug augment``: deterministic sampling, counts and balancing, provenance, selection, the memorisation
audit, latent sheets, resume, the mixed dataset, and one-line errors that leave no store behind."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bioaug.cli import EXIT_BAD_INPUT, main
from bioaug.datasets import MixedPatchDataset
from bioaug.errors import CheckpointError, ConfigError, StoreError
from bioaug.gan import TrainConfig, train
from bioaug.store import PatchStore, StoreHeader, StoreWriter, subset_store
from bioaug.augment import AugmentConfig, Synthesizer, augment, pipeline, select_synthetic
from bioaug.augment.audit import audit_store
from conftest import make_disc_store

QUIET = dict(audit=False, sheets=False)


@pytest.fixture(autouse=True)
def one_thread():
    """Two cores are shared with other work: one thread is faster and keeps timings stable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gan(tmp_path_factory) -> tuple[PatchStore, Path]:
    """One tiny GAN run (a few steps on the 72-patch disc store) shared by every test of this module."""
    root = tmp_path_factory.mktemp("gan")
    store = make_disc_store(root / "store")
    config = TrainConfig(steps=4, batch_size=12, channels=8, max_channels=32, z_dim=16, snapshot_every=100,
                         checkpoint_every=100, log_every=100, grid_columns=4, device="cpu")
    torch.set_num_threads(1)
    return store, train(store, root / "run", config, progress=False)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def lookup_scorer(known: dict[bytes, int], n_classes: int, *, doubtful: int, far: bytes | None = None):
    """A stand-in classifier that recognises patches it was shown: confident in their class, except for
    class ``doubtful`` (probability 0.6, below the 0.8 default), with one-hot features; the patch ``far``
    gets features far from every class."""
    def scorer(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = np.array([known[image.tobytes()] for image in images])
        probabilities = np.full((len(images), n_classes), 0.01)
        probabilities[np.arange(len(images)), labels] = np.where(labels == doubtful, 0.6, 0.98)
        features = np.eye(n_classes)[labels]
        if far is not None:
            features[[image.tobytes() == far for image in images]] += 50.0
        return probabilities, features
    return scorer


# -- sampling ------------------------------------------------------------------------------------------------

def test_sampling_is_deterministic_for_a_seed_and_independent_of_batching(gan):
    _, run = gan
    synth = Synthesizer.from_checkpoint(run, device="cpu")
    assert synth.class_names == ["small", "large", "pale"] and synth.patch_size == 32
    assert len(synth.checkpoint_sha256) == 64
    labels = [0, 1, 2, 2, 1, 0]
    first = synth.sample(labels, seed=3)
    assert first.shape == (6, 32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, synth.sample(labels, seed=3))
    # sample i is a function of (seed, i, label) alone, to the last grey level (19.1)
    np.testing.assert_array_equal(first[2:], synth.sample(labels[2:], seed=3, start=2))
    np.testing.assert_array_equal(first[3:4], synth.sample(labels[3:4], seed=3, start=3))
    assert not np.array_equal(first, synth.sample(labels, seed=4))
    assert not np.array_equal(first, synth.sample(labels, seed=3, truncation=0.5))
    z = synth.latents(np.arange(6), seed=3)
    np.testing.assert_array_equal(synth.decode_mixed(z, np.eye(3)[labels]), first)


# -- counts, balancing, provenance ---------------------------------------------------------------------------

def test_counts_per_class_and_provenance_are_complete(gan, tmp_path):
    real, run = gan
    config = AugmentConfig(per_class=5, classes=["small", "pale"], seed=2, truncation=0.7, **QUIET)
    store = augment(run, tmp_path / "synth", config, progress=False)
    assert store.header.kind == "synthetic" and store.class_names == real.class_names
    assert store.header.counts == {"small": 5, "large": 0, "pale": 5}

    synth = Synthesizer.from_checkpoint(run, device="cpu")
    provenance = store.header.provenance
    assert provenance["checkpoint_sha256"] == synth.checkpoint_sha256
    assert provenance["training_store_sha256"] == real.content_hash
    assert provenance["training_slides"] == ["slide0", "slide1", "slide2", "slide3"]
    manifest = store.manifest
    assert set(manifest["slide"]) == {f"synthetic:{synth.checkpoint_sha256[:12]}"}
    assert (manifest["synthetic"] == 1).all() and np.isnan(manifest["x"]).all()
    assert (manifest["seed"] == 2).all() and (manifest["truncation"] == 0.7).all()
    assert set(manifest["checkpoint_sha256"]) == {synth.checkpoint_sha256}
    # every patch can be regenerated exactly from its row alone
    for index in range(len(store)):
        again = synth.sample([store.labels[index]], seed=2, truncation=0.7, start=int(manifest["latent_index"][index]))
        np.testing.assert_array_equal(store.image(index), again[0])

    report = json.loads((tmp_path / "synth" / "augment.json").read_text())
    assert report["inputs"]["checkpoint_sha256"] == synth.checkpoint_sha256
    assert report["classes"]["pale"] == {"real": 24, "requested": 5, "generated": 5, "kept": 5, "rejected": {}}
    assert "large" not in report["classes"] and report["config"]["truncation"] == 0.7


def test_balancing_fills_every_class_up_to_the_target(gan, tmp_path):
    real, run = gan
    keep = np.concatenate([np.flatnonzero(real.labels == 0)[:20], np.flatnonzero(real.labels == 1)[:8],
                           np.flatnonzero(real.labels == 2)[:4]])
    imbalanced = subset_store(real, keep, tmp_path / "imbalanced", provenance={})
    largest = augment(run, tmp_path / "to-largest", AugmentConfig(balance_to=0, **QUIET), real=imbalanced,
                      progress=False)
    assert largest.header.counts == {"small": 0, "large": 12, "pale": 16}
    target = augment(run, tmp_path / "to-22", AugmentConfig(balance_to=22, **QUIET), real=imbalanced,
                     progress=False)
    assert target.header.counts == {"small": 2, "large": 14, "pale": 18}


# -- selection -----------------------------------------------------------------------------------------------

def test_selection_drops_the_class_the_classifier_doubts_and_off_distribution_samples(gan, tmp_path):
    real, run = gan
    synth = Synthesizer.from_checkpoint(run, device="cpu")
    labels = np.repeat([0, 1, 2], 4)
    generated = synth.sample(labels, seed=0)
    known = {image.tobytes(): int(label) for image, label in zip(real.images(), real.labels)}
    known.update({image.tobytes(): int(label) for image, label in zip(generated, labels)})
    scorer = lookup_scorer(known, 3, doubtful=2, far=generated[1].tobytes())

    config = AugmentConfig(per_class=4, select=True, **QUIET)
    store = augment(run, tmp_path / "selected", config, scorer=scorer, progress=False)
    assert store.header.counts == {"small": 3, "large": 4, "pale": 0}
    assert 1 not in store.manifest["latent_index"]
    rows = read_csv(tmp_path / "selected" / "selection.csv")
    assert len(rows) == 12
    assert {row["reason"] for row in rows if row["label"] == "pale"} == {"low_confidence"}
    assert [row["reason"] for row in rows if row["latent_index"] == "1"] == ["off_distribution"]
    report = json.loads((tmp_path / "selected" / "augment.json").read_text())
    assert report["classes"]["pale"]["rejected"] == {"low_confidence": 4}
    assert report["classes"]["small"]["rejected"] == {"off_distribution": 1}

    everything = augment(run, tmp_path / "all", AugmentConfig(per_class=4, **QUIET), progress=False)
    again = select_synthetic(everything, real, tmp_path / "reselected", config, scorer=scorer, progress=False)
    assert again.header.counts == store.header.counts
    assert json.loads((tmp_path / "reselected" / "selection.json").read_text())["classes"]["pale"]["kept"] == 0


# -- audit and sheets ----------------------------------------------------------------------------------------

def test_audit_flags_a_planted_copy_of_a_training_patch(gan, tmp_path):
    real, run = gan
    synthetic = augment(run, tmp_path / "synth", AugmentConfig(per_class=3, **QUIET), progress=False)
    planted = StoreWriter(tmp_path / "planted", StoreHeader(patch_size=32, mpp=real.mpp,
                                                            class_names=real.class_names, kind="synthetic"))
    images = np.concatenate([synthetic.images(), real.images([17])])
    rows = [{"label": name, "latent_index": i} for i, name in enumerate([*synthetic.manifest["label"], "small"])]
    planted.write_shard("s", images, rows, input_key="planted")
    summary = audit_store(planted.finalize(), real, tmp_path / "audit", copy_ratio=0.5,
                          featurize=lambda batch: batch.reshape(len(batch), -1)[:, :48].astype(float),
                          progress=False)
    assert summary["near_copies"] == 1 and summary["classes"]["small"]["near_copies"] == 1
    audit = read_csv(tmp_path / "audit" / "audit.csv")
    assert [row["near_copy"] for row in audit] == ["0"] * 9 + ["1"]
    assert audit[-1]["nearest_real_pixel"] == real.manifest["patch_id"][17]
    assert float(audit[-1]["pixel_distance"]) == 0 and float(audit[-1]["feature_distance"]) == 0
    assert Image.open(tmp_path / "audit" / "audit.png").height > 64


def test_full_run_from_the_command_line_selects_audits_and_draws_sheets(gan, tmp_path, capsys):
    _, run = gan
    out = tmp_path / "synth"
    assert main(["augment", str(run), "--out", str(out), "--per-class", "4", "--select", "true",
                 "--classifier-steps", "5", "--min-confidence", "0", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "small:" in printed and "near-copies" in printed
    report = json.loads((out / "augment.json").read_text())
    assert report["selection"]["classifier"]["network"] == "resnet10-w0.5"
    assert len(read_csv(out / "selection.csv")) == 12
    assert len(read_csv(out / "audit.csv")) == len(PatchStore(out))
    for sheet in ("walks", "class_interpolation", "arithmetic"):
        assert Image.open(out / "sheets" / f"{sheet}.png").width > 64
    assert set(report["sheets"]["arithmetic_haematoxylin"]) == {"small", "large", "pale"}


# -- resume --------------------------------------------------------------------------------------------------

def test_killed_run_leaves_no_readable_store_and_a_rerun_finishes_it(gan, tmp_path, monkeypatch):
    _, run = gan
    monkeypatch.setattr(pipeline, "SHARD_SIZE", 4)
    config = AugmentConfig(per_class=4, **QUIET)
    straight = augment(run, tmp_path / "straight", config, progress=False)
    assert len(list((tmp_path / "straight" / "shards").iterdir())) == 3

    real_write, calls = pipeline._write_shard, []

    def dies_on_second_shard(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_write_shard", dies_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        augment(run, tmp_path / "resumed", config, progress=False)
    with pytest.raises(StoreError, match="incomplete"):
        PatchStore(tmp_path / "resumed")
    resumed = augment(run, tmp_path / "resumed", config, progress=False)
    assert calls == ["synthetic.00000", "synthetic.00001", "synthetic.00001", "synthetic.00002"]
    assert resumed.content_hash == straight.content_hash
    with pytest.raises(StoreError, match="another augmentation"):
        augment(run, tmp_path / "resumed", AugmentConfig(per_class=5, **QUIET), progress=False)


# -- mixed dataset -------------------------------------------------------------------------------------------

def test_mixed_dataset_yields_the_requested_ratio_deterministically(gan, tmp_path):
    real, run = gan
    synthetic = augment(run, tmp_path / "synth", AugmentConfig(per_class=2, **QUIET), progress=False)
    mixed = MixedPatchDataset(real, synthetic, 0.25, length=40, seed=1)
    items = [mixed[i] for i in range(len(mixed))]
    assert sum(item["synthetic"] for item in items) == 10
    assert items[0]["image"].shape == (3, 32, 32)
    for item in items:
        source = synthetic if item["synthetic"] else real
        assert int(item["label"]) == source.labels[item["index"]]
    again = MixedPatchDataset(real, synthetic, 0.25, length=40, seed=1)
    assert [again[i]["index"] for i in range(40)] == [item["index"] for item in items]
    again.set_epoch(1)
    assert [again[i]["synthetic"] for i in range(40)] != [item["synthetic"] for item in items]

    default = MixedPatchDataset(real, synthetic, 0.25)
    assert len(default) == 96 and default.n_synthetic == 24
    real_rows = [default[i]["index"] for i in range(96) if not default[i]["synthetic"]]
    assert sorted(real_rows) == list(range(72))  # every real patch once per epoch
    other = make_disc_store(tmp_path / "other", per_class=4, slides=1, class_names=("a", "b", "c"))
    with pytest.raises(StoreError):
        MixedPatchDataset(other, synthetic, 0.5)


# -- bad input -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, needle", [
    (["--per-class", "0"], "--per-class: must be at least 1"),
    (["--per-class", "-3"], "--per-class: must be at least 1"),
    (["--per-class", "2", "--classes", "small", "tumour"], "tumour"),
    ([], "--per-class: give exactly one of per_class"),
    (["--per-class", "2", "--truncation", "1.5"], "--truncation"),
])
def test_bad_options_give_one_line_and_no_store(gan, tmp_path, capsys, options, needle):
    _, run = gan
    out = tmp_path / "synth"
    assert main(["augment", str(run), "--out", str(out), "--quiet", *options]) == EXIT_BAD_INPUT
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bioaug: error:")]
    assert len(errors) == 1 and needle in errors[0], errors
    assert not out.exists()


def test_checkpoint_of_other_classes_or_a_changed_training_store_is_refused(gan, tmp_path):
    _, run = gan
    other = make_disc_store(tmp_path / "other", per_class=4, slides=1, class_names=("a", "b", "c"))
    with pytest.raises(StoreError) as caught:
        augment(run, tmp_path / "synth", AugmentConfig(per_class=2, **QUIET), real=other, progress=False)
    assert "classes" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "synth").exists()

    record = json.loads((run / "config.json").read_text())
    moved = tmp_path / "moved-run"
    moved.mkdir()
    (moved / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes())
    record["inputs"]["store_sha256"] = "0" * 64
    (moved / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="has changed"):
        augment(moved, tmp_path / "synth", AugmentConfig(per_class=2, **QUIET), progress=False)
    with pytest.raises(ConfigError, match="unknown class"):
        augment(run, tmp_path / "synth", AugmentConfig(per_class=2, classes=["x"], **QUIET), progress=False)
    assert not (tmp_path / "synth").exists()


def test_the_synthesizer_rebuilds_the_preset_a_checkpoint_records(tmp_path):
    store = make_disc_store(tmp_path / "store", per_class=8)
    config = TrainConfig(preset="resnet", steps=2, batch_size=6, channels=4, max_channels=16, z_dim=8,
                         snapshot_every=100, checkpoint_every=100, log_every=100, grid_columns=2, device="cpu")
    synth = Synthesizer.from_checkpoint(train(store, tmp_path / "run", config, progress=False), device="cpu")
    assert type(synth.generator).__name__ == "ResidualGenerator" and synth.meta["config"]["preset"] == "resnet"
    labels = [0, 1, 2, 1]
    z = synth.latents(np.arange(4), seed=2)
    np.testing.assert_array_equal(synth.decode_mixed(z, np.eye(3)[labels]), synth.decode(z, labels))
    np.testing.assert_array_equal(synth.sample(labels, seed=2), synth.decode(z, labels))


def test_selection_classifier_is_cached_by_the_real_store_hash(disc_store, tmp_path, monkeypatch):
    from bioaug.augment import selection

    config = AugmentConfig(per_class=4, classifier_steps=3, batch_size=16)
    _, first = selection.train_scorer(disc_store, config, cache=tmp_path / "scorers")
    assert not first["cached"] and len(list((tmp_path / "scorers").glob("*.pt"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the selection classifier was trained again")
    monkeypatch.setattr(selection, "train_classifier", refuse)
    scorer, again = selection.train_scorer(disc_store, config, cache=tmp_path / "scorers")
    assert again["cached"] and again["sha256"] == first["sha256"]
    probabilities, features = scorer(disc_store.images([0, 1]))
    assert probabilities.shape == (2, 3) and len(features) == 2
    other = make_disc_store(tmp_path / "other", seed=5)  # other patches: another key, trained anew
    monkeypatch.undo()
    assert not selection.train_scorer(other, config, cache=tmp_path / "scorers")[1]["cached"]


def test_more_patches_than_the_free_disk_holds_are_refused_before_generating(gan, tmp_path, monkeypatch):  # 19.7
    import shutil
    from collections import namedtuple

    _, run = gan
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))
    with pytest.raises(ConfigError, match=r"--balance-to: 1,428 patches need .* and 4.2 MiB of disk \(1.0 MiB free "):
        augment(run, tmp_path / "synth", AugmentConfig(balance_to=500, **QUIET), progress=False)
    assert not (tmp_path / "synth").exists()
    augment(run, tmp_path / "synth", AugmentConfig(per_class=2, **QUIET), progress=False)  # 2 * 3 KiB * 3 fit
