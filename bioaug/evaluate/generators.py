"""The generator of each evaluation cell: trained on the cell's patches (or a ready synthetic store, taken as it
is), checked for leakage, then sampled, selected and measured against the cell's real patches.

In the cell's directory (the layout is in ``bioaug.evaluate.protocol``) the GAN trains on ``gan-store`` into
``gan-<key>``; its patches go to ``synthetic`` and ``selected``, and ``synthetic.json`` records what identifies
them with their fidelity and the leakage check. Each step reuses its finished result when its key matches, so
the step that ran as a Dask task (``bioaug.evaluate.distributed``) is not run again.

Every step takes the cell's reference classifier (``Evaluation.reference_model``) as an argument: it labels the
pool the GAN also learns from, scores synthetic patches for selection and is the feature network of fidelity.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..classify import extract_features, predict_proba, state_dict_sha256
from ..config import config_to_dict
from ..errors import CheckpointError, StoreError
from ..gan import train as train_gan
from ..gan.run import RunDirectory
from ..provenance import sha256_json, write_json_atomic
from ..store import PatchStore
from ..augment import augment, select_synthetic
from .arms import ARMS
from .cells import PREDICTION_BATCH, Cell, read_result
from .config import EvaluateConfig
from .fidelity import fidelity_metrics
from .leakage import check_generator_leakage, generator_training_slides
from .pool import pool_predictions, write_labelled_union

#: Patches per side for the fidelity metrics (k-NN precision/recall compares every pair, so both are capped).
FIDELITY_SAMPLES = 2000


def check_generator(slides: set[str], cell: Cell, source: Path) -> None:
    """Refuse a generator that saw a test slide, or a slide outside this cell's budget and pool."""
    check_generator_leakage(slides, cell.test_slides, source=source)
    outside = sorted(slides - cell.allowed_generator_slides())
    if outside:
        raise CheckpointError(source, f"generator saw {len(outside)} slide(s) outside the {cell.name} training "
                                      f"patches and pool (e.g. {', '.join(outside[:3])}); it may only see the "
                                      "budget's slides and the fold's unlabelled training slides")


def gan_slides(run: Path) -> set[str]:
    """The slides a GAN run was trained on, from its recorded store after checking that store's content hash."""
    recorded = RunDirectory(run).training_store()
    if recorded is None:
        raise CheckpointError(run, "run record names no training store: cannot verify what the generator saw")
    return generator_training_slides(*recorded, source=run)


def gan_run_directory(cell_directory: Path, store: PatchStore, config: Any) -> Path:
    """Where the cell's GAN with ``config`` (a ``TrainConfig``) trains on ``store``: ``gan-<key>``.

    The key hashes the store's content and the options a resumed run must keep (preset, networks, seed, ...),
    so switching the generator in the evaluate config, or a pool labelled differently, trains a new run beside
    the old one instead of failing to resume it; options a resume may change (steps, time budget) continue
    the same run.
    """
    fixed = {name: value for name, value in config_to_dict(config).items() if name in config.fixed_fields()}
    return cell_directory / f"gan-{sha256_json({'options': fixed, 'store': store.content_hash})[:12]}"


def recorded_stores(record: dict[str, Any]) -> dict[str, PatchStore] | None:
    """The stores a generator record names, opened, or None unless each is complete with the recorded contents."""
    try:
        stores = {name: PatchStore(path) for name, path in record.get("stores", {}).items()}
    except StoreError:
        return None
    if any(store.content_hash != record["store_sha256"][name] for name, store in stores.items()):
        return None
    return stores


class CellGenerators:
    """The generator work of an evaluation's cells, under its config and the ``settings`` hash every result of
    the evaluation depends on."""

    def __init__(self, config: EvaluateConfig, settings: str, class_names: list[str], *, device: str | None,
                 progress: bool) -> None:
        self.config, self.settings, self.class_names = config, settings, class_names
        self.device, self.progress = device, progress

    def generator_store(self, cell: Cell, model: nn.Module) -> tuple[PatchStore, dict[str, Any]]:
        """What the cell's GAN trains on: the budget's patches, plus the pool patches ``model`` labels
        confidently.

        Pool patches below the threshold join as unlabelled rows when the generator config learns from them
        (``generator.unlabelled``); otherwise they are left out.
        """
        config = self.config
        if not (config.generator_pool and cell.pool is not None and len(cell.pool)):
            return cell.train_store, {"pool": None}
        predicted, confidence = pool_predictions(cell.pool, model, self.device)
        confident = confidence >= config.pseudo_label_threshold
        keep_unlabelled = getattr(config.generator, "unlabelled", "ignore") != "ignore"
        rows = np.flatnonzero(confident | keep_unlabelled)
        labels = np.where(confident[rows], predicted[rows], -1)
        store = write_labelled_union(cell.train_store, cell.pool, rows, labels, cell.directory / "gan-store",
                                     provenance={"fold": cell.fold, "budget": cell.budget,
                                                 "pseudo_label_threshold": config.pseudo_label_threshold})
        counts = np.bincount(labels[labels >= 0], minlength=len(self.class_names))
        return store, {"pool": str(cell.pool.path), "pool_sha256": cell.pool.content_hash,
                       "threshold": config.pseudo_label_threshold,
                       "pseudo_labelled": dict(zip(self.class_names, map(int, counts))),
                       "unlabelled_rows": int((labels < 0).sum()), "pool_patches": int(len(cell.pool))}

    def train_generator(self, cell: Cell, model: nn.Module) -> dict[str, Any]:
        """Train (or take) the cell's generator, checked for leakage; returns ``{"source": what identifies it,
        "pool": the pool patches it learnt from}`` (JSON, so a Dask task can hand it on)."""
        if cell.ready is not None:
            return {"source": {"generator": str(cell.ready.path), "ready_store_sha256": cell.ready.content_hash},
                    "pool": {"pool": None}}
        gan_store, pool_record = self.generator_store(cell, model)
        gan_config = dataclasses.replace(self.config.generator, seed=self.config.split_seed,
                                         device=self.config.device)
        run = train_gan(gan_store, gan_run_directory(cell.directory, gan_store, gan_config), gan_config,
                        progress=self.progress)
        check_generator(gan_slides(run), cell, run)
        return {"source": {"generator": str(run), "checkpoint_sha256": RunDirectory(run).checkpoint_sha256()},
                "pool": pool_record}

    def prepare_synthetic(self, cell: Cell, model: nn.Module, real_images: np.ndarray,
                          generator: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, PatchStore]]:
        """Draw and select synthetic patches from the cell's generator and measure their fidelity against
        ``real_images`` (the cell's training patches).

        ``generator`` is ``train_generator``'s result when that ran apart (a Dask task); otherwise it runs here.
        Returns the generator record (hashes, pool, leakage check, fidelity) and {"synthetic": store,
        "selected": store}.
        """
        config = self.config
        synthetic_dir, selected_dir = cell.directory / "synthetic", cell.directory / "selected"
        generator = generator or self.train_generator(cell, model)
        source, pool_record = generator["source"], generator["pool"]
        augment_config = dataclasses.replace(config.augment, seed=config.split_seed, device=config.device,
                                             sheets=False)
        feature_sha = state_dict_sha256(model)
        key = sha256_json({"settings": self.settings, "source": source, "scorer": feature_sha,
                           "augment": config_to_dict(augment_config), "arms": sorted(config.arms)})
        record = read_result(cell.directory / "synthetic.json")
        if record is not None and record.get("key") == key:
            stores = recorded_stores(record)
            if stores is not None:
                return record, stores

        for stale in (synthetic_dir, selected_dir):
            shutil.rmtree(stale, ignore_errors=True)

        def scorer(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return (predict_proba(model, images, batch_size=PREDICTION_BATCH, device=self.device),
                    extract_features(model, images, batch_size=PREDICTION_BATCH, device=self.device))

        if cell.ready is None:
            synthetic = augment(Path(source["generator"]), synthetic_dir, augment_config, real=cell.train_store,
                                scorer=scorer, progress=self.progress)
        else:
            synthetic = cell.ready
        generator_slides = set(map(str, synthetic.header.provenance.get("training_slides", [])))
        check_generator(generator_slides, cell, synthetic.path)
        stores = {"synthetic": synthetic}
        if any("selected" in ARMS[arm].sources for arm in config.arms):
            stores["selected"] = select_synthetic(synthetic, cell.train_store, selected_dir, augment_config,
                                                  scorer=scorer, progress=self.progress)
        rng = np.random.default_rng(config.split_seed)
        real_sample = real_images[np.sort(rng.permutation(len(real_images))[:FIDELITY_SAMPLES])]
        real_features = extract_features(model, real_sample, batch_size=PREDICTION_BATCH, device=self.device)
        fidelity = {}
        for name, chosen in stores.items():
            sample = np.sort(rng.permutation(len(chosen))[:FIDELITY_SAMPLES])
            if len(sample) < 5:
                continue  # too few patches kept for any fidelity metric
            fake = extract_features(model, chosen.images(sample), batch_size=PREDICTION_BATCH, device=self.device)
            fidelity[name] = {**fidelity_metrics(real_features, fake, seed=config.split_seed),
                              "feature_network": feature_sha[:12]}
        pool_slides = set(map(str, cell.pool.slides)) if cell.pool is not None else set()
        record = {"key": key, "cell": cell.name, "fold": cell.fold, "budget": cell.budget,
                  "stores": {name: str(chosen.path) for name, chosen in stores.items()},
                  "store_sha256": {name: chosen.content_hash for name, chosen in stores.items()},
                  "kept": {name: dict(zip(self.class_names, map(int, np.bincount(
                      chosen.labels[chosen.labels >= 0], minlength=len(self.class_names)))))
                      for name, chosen in stores.items()},
                  "generator_data": pool_record,
                  "feature_network_sha256": feature_sha, "fidelity": fidelity,
                  "leakage": {"train store": cell.train_store.content_hash[:12],
                              "pool store": cell.pool.content_hash[:12] if cell.pool is not None else "–",
                              "generator": source["generator"],
                              "generator store": str(synthetic.header.provenance.get("training_store_sha256", ""))[:12],
                              "checkpoint": str(synthetic.header.provenance.get("checkpoint_sha256", ""))[:12],
                              "synthetic store": synthetic.content_hash[:12],
                              "generator slides": len(generator_slides), "pool slides": len(pool_slides),
                              "test slides": len(cell.test_slides),
                              "shared with test": len((generator_slides | pool_slides) & cell.test_slides)}}
        write_json_atomic(cell.directory / "synthetic.json", record)
        return record, stores
