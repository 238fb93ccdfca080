"""``augment``: draw a synthetic patch store from a GAN run, optionally selected, audited and illustrated.

Output directory ``out`` is a patch store (``kind="synthetic"``) with, beside its files::

    augment.json         run record: resolved config, checkpoint and store hashes, versions, per-class
                         real/requested/generated/kept counts and rejection reasons, timings
    selection.csv        with select: every generated sample (latent index, class, confidence, feature
                         distance, kept, reason)
    audit.json/.csv/.png with audit: nearest real patch of every kept sample, near-copy flags, closest pairs
    sheets/*.png         with sheets: latent walks, class interpolation, latent arithmetic

Manifest rows of synthetic patches: ``slide`` is ``synthetic:<checkpoint sha256[:12]>``, ``x`` and ``y`` are
empty (NaN; a synthetic patch has no position on a slide), ``label`` is the intended class, and ``seed``,
``latent_index``, ``checkpoint_sha256`` and ``truncation`` (empty when none) say exactly how to regenerate it
with ``Synthesizer.sample``; with select also ``confidence`` and ``feature_distance``.

Generation walks a fixed plan (class-major; latent index = position in the plan) in shards of
``SHARD_SIZE`` latent indices; each shard is generated, scored, and written atomically before the next, so
memory stays bounded and a rerun with the same arguments skips finished shards. The store is marked
complete only at the end, so a killed run never leaves a store that readers accept.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import config_to_dict
from ..errors import CheckpointError, ConfigError, StoreError
from ..gan.run import RunDirectory
from ..locks import has_entries, writer_lock
from ..progress import progress_bar
from ..provenance import run_record, sha256_json, write_json_atomic
from ..store import HEADER_NAME, SHARDS_DIR, PatchStore, StoreHeader, StoreWriter, check_compatible
from .config import AugmentConfig
from .records import class_tally, write_csv_atomic
from .selection import SELECTION_COLUMNS, Scorer, fit_reference, judge, selection_rows, train_scorer
from .synthesizer import Synthesizer

SHARD_SIZE = 4096
REPORT_NAME = "augment.json"


def open_real_store(real: str | Path | PatchStore | None, run: RunDirectory, synth: Synthesizer) -> PatchStore:
    """The real store to balance against, select with and audit against.

    Defaults to the run's recorded training store, whose content hash must match the record. Any store must
    have the checkpoint's classes and patch size.
    """
    if real is None:
        recorded = run.training_store()
        if recorded is None:
            raise CheckpointError(synth.checkpoint, "run record names no training store; pass real=STORE")
        store = PatchStore(recorded[0])
        if store.content_hash != recorded[1]:
            raise CheckpointError(synth.checkpoint, f"the training store {store.path} has changed since the run "
                                                    f"(content hash {store.content_hash[:12]}, recorded "
                                                    f"{recorded[1][:12] or '(unrecorded)'}); pass real=STORE")
    else:
        store = real if isinstance(real, PatchStore) else PatchStore(real)
    check_compatible(store, synth)
    return store


def plan_counts(config: AugmentConfig, class_names: list[str], real_counts: np.ndarray) -> dict[str, int]:
    """Synthetic patches to generate per class: ``per_class``, or what balancing to ``balance_to`` needs."""
    chosen = config.check_classes(class_names, "--classes")
    if config.per_class is not None:
        return {class_names[c]: config.per_class for c in chosen}
    target = config.balance_to or int(real_counts.max())
    return {class_names[c]: max(0, target - int(real_counts[c])) for c in chosen}


#: Memory per synthetic patch while it is indexed: its manifest row as read back when the store is sealed and
#: opened (about 750 bytes measured for a plain augment row), its planned label and selection record.
BYTES_PER_PATCH_INDEXED = 1024


def check_size(out: Path, total: int, patch_size: int, flag: str) -> None:
    """Raise ``ConfigError`` before anything is generated when ``total`` patches would not fit this machine's
    memory (their index: the images themselves stream to disk) or the free disk space at ``out``.

    ``--per-class 1000000000`` otherwise grew to 22 GB and was killed by the kernel without a word.
    """
    from ..tile.planning import physical_memory

    memory, images = total * BYTES_PER_PATCH_INDEXED, total * patch_size * patch_size * 3
    place = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(place).free
    if memory > physical_memory() or images > free:
        raise ConfigError(flag, f"{total:,} patches need about {_size(memory)} of memory (this machine has "
                                f"{_size(physical_memory())}) and {_size(images)} of disk ({_size(free)} free in "
                                f"{place}); ask for fewer")


def _size(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB" if size >= 2**30 else f"{size / 2**20:,.1f} MiB"


def _check_out(out: Path, key: str) -> None:
    """Refuse an output that is something else, or a store of another augmentation (no resume across args)."""
    if (out / HEADER_NAME).is_file():
        provenance = json.loads((out / HEADER_NAME).read_text()).get("provenance", {})
        if provenance.get("augment_key") != key:
            raise StoreError(out, "holds a store from another augmentation (other checkpoint or options); "
                                  "choose another output or delete it")
    elif out.exists() and (not out.is_dir() or has_entries(out)):
        raise StoreError(out, "exists, is not empty and is not a patch store")


def augment(run: str | Path, out: str | Path, config: AugmentConfig | None = None, *,
            real: str | Path | PatchStore | None = None, scorer: Scorer | None = None,
            progress: bool = True) -> PatchStore:
    """Generate a synthetic store at ``out`` from the EMA generator of ``run`` (directory or checkpoint).

    Parameters
    ----------
    run
        A ``bioaug train`` run directory (or its ``checkpoint.pt``); its ``config.json`` names the training store.
    out
        Output store directory; rerunning with the same arguments resumes it.
    config
        Counts, truncation, seed, selection, audit and sheets (defaults: ``AugmentConfig()``, which must be
        given ``per_class`` or ``balance_to``).
    real
        Real store for balancing, selection and audit; defaults to the run's training store.
    scorer
        Selection/audit classifier as a callable (images -> probabilities, features); by default one is
        trained on ``real`` (``config.classifier``, ``config.classifier_steps``; cached in the run directory).

    Every input is checked before anything is written: a ``BioaugError`` (bad option, unknown class,
    checkpoint of other classes, changed training store) leaves no output behind.
    """
    started = time.perf_counter()
    config = config or AugmentConfig()
    config.validate()
    out = Path(out)
    run_dir = RunDirectory.open(run)
    record = run_dir.read_record()
    checkpoint = run_dir.checkpoint
    synth = Synthesizer.from_checkpoint(checkpoint, config.device)
    if list(record.get("class_names", synth.class_names)) != synth.class_names:
        raise CheckpointError(checkpoint, f"holds classes {synth.class_names} but {run_dir.config_file} records "
                                          f"{record.get('class_names')}")
    real_store = open_real_store(real, run_dir, synth)
    real_counts = np.bincount(real_store.labels[real_store.labels >= 0], minlength=len(synth.class_names))
    counts = plan_counts(config, synth.class_names, real_counts)
    check_size(out, sum(counts.values()), synth.patch_size, "--per-class" if config.per_class is not None
               else "--balance-to")
    labels = np.repeat([synth.class_names.index(name) for name in counts], list(counts.values()))
    selection_key = ({"min_confidence": config.min_confidence, "feature_quantile": config.feature_quantile,
                      "classifier": config.classifier, "classifier_steps": config.classifier_steps,
                      "scorer": "injected" if scorer is not None else "trained", "real": real_store.content_hash}
                     if config.select else None)
    key = sha256_json({"checkpoint": synth.checkpoint_sha256, "counts": counts, "seed": config.seed,
                       "truncation": config.truncation, "selection": selection_key})
    with writer_lock(out):  # before the output is checked, so what is checked stays true
        _check_out(out, key)

        classifier: dict[str, Any] = {"network": "injected scorer"} if scorer is not None else {}
        if scorer is None and (config.select or config.audit):
            scorer, classifier = train_scorer(real_store, config, synth.device, cache=run_dir.scorers_dir)
            classifier["seconds"] = round(time.perf_counter() - started, 2)
        reference, real_features = fit_reference(real_store, scorer, config) if scorer is not None else (None, None)

        header = StoreHeader(
            patch_size=synth.patch_size, mpp=real_store.mpp, class_names=synth.class_names, kind="synthetic",
            provenance={"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": synth.checkpoint_sha256,
                        "generator_step": synth.meta["step"], "run": str(run_dir.path.resolve()),
                        "training_store": record.get("inputs", {}).get("store"),
                        "training_store_sha256": synth.meta["store_sha256"],
                        "training_slides": record.get("training_slides", []), "seed": config.seed,
                        "truncation": config.truncation, "augment_key": key})
        writer = StoreWriter(out, header)
        generation_started = time.perf_counter()
        shard_key_extra = classifier.get("sha256", "")  # a retrained classifier that differs redoes its shards
        slide = f"synthetic:{synth.checkpoint_sha256[:12]}"
        verdicts: list[dict[str, Any]] = []
        with progress_bar(total=len(labels), desc="augment", unit="patch", disable=not progress) as bar:
            for number, start in enumerate(range(0, len(labels), SHARD_SIZE)):
                name = f"synthetic.{number:05d}"
                input_key = sha256_json({"augment_key": key, "shard": number, "classifier": shard_key_extra})
                if not writer.is_complete(name, input_key):
                    _write_shard(writer, name, input_key, synth, config, labels, start, reference, scorer, slide)
                meta = json.loads((out / SHARDS_DIR / name / "shard.json").read_text())
                if "selection" in meta:
                    verdicts.append(meta["selection"])
                bar.update(min(SHARD_SIZE, len(labels) - start))
        store = writer.finalize()
        generation_seconds = time.perf_counter() - generation_started

        report = run_record(config_to_dict(config), inputs={
            "run": str(run_dir.path.resolve()), "checkpoint": str(checkpoint.resolve()),
            "checkpoint_sha256": synth.checkpoint_sha256, "real_store": str(real_store.path.resolve()),
            "real_store_sha256": real_store.content_hash})
        report.update({"class_names": synth.class_names, "store_sha256": store.content_hash,
                       "device": str(synth.device), "generation_seconds": round(generation_seconds, 2),
                       "samples_per_second": round(len(labels) / max(generation_seconds, 1e-9), 1),
                       "classes": _class_report(synth.class_names, counts, real_counts, labels, verdicts)})
        if config.select:
            rows = [row for verdict in verdicts for row in verdict["rows"]]
            write_csv_atomic(out / "selection.csv", SELECTION_COLUMNS, rows)
            report["selection"] = {"classifier": classifier, "min_confidence": config.min_confidence,
                                   "feature_quantile": config.feature_quantile,
                                   "thresholds": dict(zip(synth.class_names, [None if np.isnan(t) else float(t)
                                                                              for t in reference.thresholds]))}
        if config.audit:
            from .audit import audit_store

            featurize = (lambda images: scorer(images)[1]) if scorer is not None else None
            report["audit"] = audit_store(store, real_store, out, copy_ratio=config.copy_ratio, device=synth.device,
                                          batch_size=config.batch_size, featurize=featurize,
                                          real_features=real_features, progress=progress)
        if config.sheets:
            from .latent import write_latent_sheets

            chosen = [synth.class_names.index(name) for name in counts]
            report["sheets"] = write_latent_sheets(synth, chosen, out / "sheets", seed=config.seed)
        report["seconds"] = round(time.perf_counter() - started, 2)
        write_json_atomic(out / REPORT_NAME, report)
        return store


def _write_shard(writer: StoreWriter, name: str, input_key: str, synth: Synthesizer, config: AugmentConfig,
                 labels: np.ndarray, start: int, reference: Any, scorer: Scorer | None, slide: str) -> None:
    """Generate latent indices ``start .. start + SHARD_SIZE`` batch by batch, select, and write one shard."""
    indices = np.arange(start, min(start + SHARD_SIZE, len(labels)))
    kept_images, rows, verdicts = [], [], []
    for begin in range(0, len(indices), config.batch_size):
        batch = indices[begin:begin + config.batch_size]
        images = synth.sample(labels[batch], config.seed, config.truncation, start=int(batch[0]))
        extra: list[dict[str, Any]] = [{} for _ in batch]
        keep = np.ones(len(batch), bool)
        if config.select:
            probabilities, features = scorer(images)
            verdict = judge(probabilities, features, labels[batch], reference, config.min_confidence)
            keep = verdict["kept"]
            verdicts.append(selection_rows(batch, labels[batch], verdict, synth.class_names))
            extra = [{"confidence": row["confidence"], "feature_distance": row["feature_distance"]}
                     for row in verdicts[-1]]
        kept_images.append(images[keep])
        rows.extend({"slide": slide, "x": "", "y": "", "label": synth.class_names[labels[i]], "synthetic": 1,
                     "seed": config.seed, "latent_index": int(i), "checkpoint_sha256": synth.checkpoint_sha256,
                     "truncation": "" if config.truncation is None else config.truncation, **more}
                    for i, more, k in zip(batch, extra, keep) if k)
    meta = {"selection": {"rows": [row for part in verdicts for row in part]}} if config.select else None
    writer.write_shard(name, np.concatenate(kept_images), rows, input_key, meta)


def _class_report(class_names: list[str], counts: dict[str, int], real_counts: np.ndarray, labels: np.ndarray,
                  verdicts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per chosen class: real, requested, generated and kept counts and rejection reasons."""
    if verdicts:
        rows = [row for verdict in verdicts for row in verdict["rows"]]
        lookup = {name: index for index, name in enumerate(class_names)}
        tally = class_tally(class_names, np.asarray([lookup[row["label"]] for row in rows], dtype=np.int64),
                            np.asarray([row["reason"] for row in rows], dtype=object))
    else:
        tally = class_tally(class_names, labels)
    return {name: {"real": int(real_counts[class_names.index(name)]), "requested": requested, **tally[name]}
            for name, requested in counts.items()}
