"""``bioaug evaluate``: the whole protocol, from a real patch store to the report.

For every evaluated fold (StratifiedGroupKFold over slides or patients) and label budget (a nested fraction of
the fold's training groups) a cell is prepared, then every arm is trained for every seed on the same splits:

1. the budget's training patches become a store of their own (``train-store``), so a generator trained on it
   records by content hash exactly which slides it saw;
2. with synthetic arms, a GAN is trained on that store (``gan``), or a ready synthetic store is taken from
   the config; either way the generator's training slides are checked against the fold's test slides and
   the budget's slides before any classifier is trained (a leak is a one-line error, not a footnote);
3. a classifier trained on the real training patches (the ``real`` arm's first seed) scores the synthetic
   patches: it is the feature space of the fidelity metrics, the scorer of the ``selected`` arm and of the
   memorisation audit;
4. each (arm, seed) classifier is tested on the fold's test patches; its metrics go to a small JSON file.

Work layout under ``out/work`` (deterministic, so a rerun resumes and a GAN already trained there is reused)::

    fold-<k>/budget-<b:.2f>/train-store    the budget's training patches (subset of the input store)
    fold-<k>/budget-<b:.2f>/gan            GAN run trained on train-store
    fold-<k>/budget-<b:.2f>/synthetic      augment output (synthetic patches, audit)
    fold-<k>/budget-<b:.2f>/selected       the synthetic patches kept by selection
    fold-<k>/budget-<b:.2f>/synthetic.json fidelity, hashes and leakage check of this cell's generator
    fold-<k>/budget-<b:.2f>/results/<arm>-seed-<s>.json   metrics and test probabilities of one classifier

Every result file carries a key of everything it depends on (settings and input hashes) and is reused only
when the key matches. The report (``report.md``, ``report.json``, ``table.tex``, PNGs) goes into ``out``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from ..classify import ClassifierConfig, extract_features, predict_proba, state_dict_sha256, train_classifier
from ..config import config_to_dict
from ..errors import CheckpointError, ConfigError, StoreError
from ..gan import TrainConfig
from ..gan import train as train_gan
from ..provenance import run_record, sha256_file, sha256_json, write_json_atomic
from ..store import PatchStore, subset_store
from ..synthesis import AugmentConfig, augment, select_synthetic
from ..synthesis.pipeline import read_run
from .baselines import colour_baseline
from .config import ARM_STORES, SYNTHETIC_ARMS, EvaluateConfig
from .fidelity import fidelity_metrics
from .leakage import check_generator_leakage, generator_training_slides
from .metrics import classification_metrics
from .report import write_report
from .splits import grouped_folds, label_budget, validation_split

log = logging.getLogger("bioaug")

#: Patches per side for the fidelity metrics (k-NN precision/recall compares every pair, so both are capped).
FIDELITY_SAMPLES = 2000
#: Real and synthetic patches in the side-by-side sample figure.
SAMPLE_GRID = 64
#: Columns of the report's leakage table, in order (result files store them with sorted keys).
LEAKAGE_COLUMNS = ("train store", "generator", "generator store", "checkpoint", "synthetic store",
                   "generator slides", "test slides", "shared with test")


@dataclass
class Cell:
    """One (fold, budget) of the protocol: which patches train and test, and where its work goes."""

    fold: int
    budget: float
    directory: Path
    train: np.ndarray
    """Input-store indices of the budget's training patches (the generator sees exactly these)."""
    test: np.ndarray
    train_store: PatchStore
    test_slides: set[str]
    ready: PatchStore | None
    """A ready synthetic store from the config, used instead of training a generator."""

    @property
    def name(self) -> str:
        return f"fold {self.fold}, budget {100 * self.budget:g}%"


def cell_directory(work: Path, fold: int, budget: float) -> Path:
    """``work/fold-<k>/budget-<b:.2f>``: where one (fold, budget) keeps its stores, generator and results."""
    return work / f"fold-{fold}" / f"budget-{budget:.2f}"


def _groups(store: PatchStore, group_by: str) -> np.ndarray:
    """The group name of every patch: its slide, or a manifest column such as ``patient``."""
    if group_by == "slide":
        return np.asarray(store.slides, dtype=object)
    if group_by not in store.manifest:
        raise ConfigError("group_by", f"{store.path} has no manifest column {group_by!r}; columns: "
                                      f"{', '.join(store.manifest)}")
    groups = np.asarray([str(value) for value in store.manifest[group_by]], dtype=object)
    if any(value in ("", "nan") for value in groups):
        raise ConfigError("group_by", f"column {group_by!r} of {store.path} is empty for some patches")
    return groups


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _check_generator(slides: set[str], cell: Cell, source: Path) -> None:
    """Refuse a generator that saw a test slide, or a training slide outside this cell's budget."""
    check_generator_leakage(slides, cell.test_slides, source=source)
    outside = sorted(slides - set(map(str, cell.train_store.slides)))
    if outside:
        raise CheckpointError(source, f"generator saw {len(outside)} slide(s) outside the {cell.name} training "
                                      f"patches (e.g. {', '.join(outside[:3])}); it may only see the budget's "
                                      "slides")


def _gan_slides(run: Path) -> set[str]:
    """The slides a GAN run was trained on, from its recorded store after checking that store's content hash."""
    inputs = read_run(run)[2].get("inputs", {})
    if "store" not in inputs:
        raise CheckpointError(run, "run record names no training store: cannot verify what the generator saw")
    return generator_training_slides(inputs["store"], inputs.get("store_sha256", ""), source=run)


def plan(store: PatchStore, config: EvaluateConfig, work: Path) -> list[Cell]:
    """Every (fold, budget) cell, with its training store written and every generator checked for leakage.

    Nothing is trained here: a bad group column, a ready synthetic store of other classes or one whose
    generator saw a test slide, or a GAN run left in the work directory by another split fails now.
    """
    config.validate()
    groups = _groups(store, config.group_by)
    folds = grouped_folds(store.labels, groups, config.folds, config.split_seed)
    cells = []
    for fold in config.fold_indices():
        train, test = folds[fold]
        test_slides = set(map(str, store.slides[test]))
        for budget in config.budgets:
            chosen = train[label_budget(groups[train], budget, config.split_seed)]
            directory = cell_directory(work, fold, budget)
            train_store = subset_store(store, chosen, directory / "train-store", provenance={
                "fold": fold, "budget": budget, "split_seed": config.split_seed})
            ready = config.ready_synthetic(fold, budget)
            cell = Cell(fold, budget, directory, chosen, test, train_store, test_slides,
                        PatchStore(ready) if ready else None)
            if cell.ready is not None:
                if cell.ready.class_names != store.class_names:
                    raise ConfigError(f"synthetic {ready}", f"has classes {cell.ready.class_names}, the store "
                                                            f"{store.class_names}")
                if "training_slides" not in cell.ready.header.provenance:
                    raise CheckpointError(ready, "records no generator training slides: cannot rule out that "
                                                 "its generator saw test slides")
                _check_generator(set(map(str, cell.ready.header.provenance["training_slides"])), cell, ready)
            elif (directory / "gan" / "config.json").is_file() and set(config.arms) & set(SYNTHETIC_ARMS):
                _check_generator(_gan_slides(directory / "gan"), cell, directory / "gan")
            cells.append(cell)
    return cells


class Evaluation:
    """Runs the cells of one evaluation; holds the store, config and the settings every result depends on."""

    def __init__(self, store: PatchStore, config: EvaluateConfig, progress: bool) -> None:
        self.store, self.config, self.progress = store, config, progress
        self.n_classes = len(store.class_names)
        self.classifier = ClassifierConfig(network=config.network, epochs=config.epochs,
                                           batch_size=config.batch_size, lr=config.lr,
                                           weight_decay=config.weight_decay, patience=config.patience)
        self.device = None if config.device == "auto" else config.device
        self.settings = sha256_json({"store": store.content_hash, "classifier": config_to_dict(self.classifier),
                                     "split": [config.folds, config.split_seed, config.group_by,
                                               config.validation_fraction]})

    # -- one cell -------------------------------------------------------------------------------------------------

    def run_cell(self, cell: Cell) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Rows of every (arm, seed) of ``cell`` and its generator record (None without synthetic arms)."""
        groups = _groups(self.store, self.config.group_by)
        train_images = self.store.images(cell.train)
        train_labels = self.store.labels[cell.train]
        test = (self.store.images(cell.test), self.store.labels[cell.test])
        splits = {seed: validation_split(self.store.labels, groups, cell.train, self.config.validation_fraction,
                                         seed) for seed in self.config.seeds}
        position = {index: i for i, index in enumerate(cell.train)}
        data = {seed: tuple(np.array([position[i] for i in part], dtype=np.int64) for part in split)
                for seed, split in splits.items()}

        def arm(name: str, seed: int, extra: PatchStore | None = None) -> tuple[dict[str, Any], nn.Module | None]:
            fit, val = data[seed]
            return self.run_arm(cell, name, seed, (train_images, train_labels), fit, val, test, extra)

        generator = None
        stores: dict[str, PatchStore] = {}
        if set(self.config.arms) & set(SYNTHETIC_ARMS):
            generator, stores = self.prepare_synthetic(cell, lambda: arm("real", self.config.seeds[0])[1],
                                                       (train_images, train_labels))
        rows = []
        for seed in self.config.seeds:
            for name in self.config.arms:
                rows.append(arm(name, seed, stores.get(ARM_STORES.get(name, "")))[0])
        return rows, generator

    def run_arm(self, cell: Cell, name: str, seed: int, train: tuple[np.ndarray, np.ndarray], fit: np.ndarray,
                val: np.ndarray, test: tuple[np.ndarray, np.ndarray], extra: PatchStore | None
                ) -> tuple[dict[str, Any], nn.Module | None]:
        """Train and test arm ``name`` with ``seed``; (report row, model or None when the result was reused).

        The result file is reused when its key (settings, seed, synthetic store hash) matches.
        """
        path = cell.directory / "results" / f"{name}-seed-{seed}.json"
        key = sha256_json({"settings": self.settings, "arm": name, "seed": seed, "train": cell.train_store.content_hash,
                           "extra": extra.content_hash if extra is not None else None})
        done = _read_json(path)
        if done is not None and done.get("key") == key:
            return _row(done), None
        images, labels = train
        started = time.perf_counter()
        model, info = None, {}
        if name == "colour":
            probabilities = colour_baseline(images, labels, test[0], self.n_classes, seed=seed)
            n_train = len(images)
        else:
            config = dataclasses.replace(self.classifier, seed=seed,
                                         augmentation="classic" if name == "classic" else "none")
            fit_images, fit_labels = images[fit], labels[fit]
            extra_data = (extra.images(), extra.labels) if extra is not None and len(extra) else None
            if name == "synthetic_only":
                assert extra is not None
                fit_images, fit_labels, extra_data = extra.images(), extra.labels, None
            model, history = train_classifier(fit_images, fit_labels, images[val], labels[val], self.n_classes,
                                              config, extra=extra_data, device=self.device)
            probabilities = predict_proba(model, test[0], batch_size=self.config.batch_size, device=self.device)
            n_train = history["n_train"]
            info = {"best_epoch": history["best_epoch"], "epochs_run": len(history["epochs"]),
                    "stopped_early": history["stopped_early"], "model_sha256": state_dict_sha256(model)}
        result = {"key": key, "arm": name, "fold": cell.fold, "budget": cell.budget, "seed": seed,
                  "n_train": int(n_train), "n_synthetic": int(len(extra)) if extra is not None else 0,
                  "seconds": round(time.perf_counter() - started, 2), **info,
                  **classification_metrics(test[1], probabilities, self.store.class_names),
                  "probabilities": np.round(probabilities, 5).tolist()}
        write_json_atomic(path, result)
        log.info("%s, %s seed %d: balanced accuracy %.3f (%.0f s)", cell.name, name, seed,
                 result["balanced_accuracy"], result["seconds"])
        return _row(result), model

    # -- the generator of one cell --------------------------------------------------------------------------------

    def augment_config(self, train_labels: np.ndarray) -> AugmentConfig:
        """How synthetic patches are drawn and selected for a cell (per class: the option, or the largest class)."""
        per_class = self.config.synthetic_per_class or int(np.bincount(train_labels).max())
        return AugmentConfig(per_class=per_class, truncation=self.config.truncation, seed=self.config.split_seed,
                             batch_size=256, device=self.config.device, min_confidence=self.config.min_confidence,
                             feature_quantile=self.config.feature_quantile, sheets=False)

    def prepare_synthetic(self, cell: Cell, feature_model: Callable[[], nn.Module | None],
                          train: tuple[np.ndarray, np.ndarray]) -> tuple[dict[str, Any], dict[str, PatchStore]]:
        """Train (or take) the cell's generator, draw and select synthetic patches, measure their fidelity.

        ``feature_model`` trains the real arm's first-seed classifier, the feature network and scorer. Returns
        the generator record (hashes, leakage check, fidelity) and {"synthetic": store, "selected": store}.
        """
        config = self.config
        synthetic_dir, selected_dir = cell.directory / "synthetic", cell.directory / "selected"
        if cell.ready is None:
            gan_config = TrainConfig(steps=config.gan_steps, batch_size=config.gan_batch_size,
                                     seed=config.split_seed, device=config.device)
            run = train_gan(cell.train_store, cell.directory / "gan", gan_config, progress=self.progress)
            _check_generator(_gan_slides(run), cell, run)
            source = {"generator": str(run), "checkpoint_sha256": sha256_file(run / "checkpoint.pt")}
        else:
            source = {"generator": str(cell.ready.path), "ready_store_sha256": cell.ready.content_hash}
        augment_config = self.augment_config(train[1])
        key = sha256_json({"settings": self.settings, "seed": config.seeds[0], "source": source,
                           "augment": config_to_dict(augment_config), "arms": sorted(config.arms)})
        record = _read_json(cell.directory / "synthetic.json")
        if record is not None and record.get("key") == key:
            stores = _recorded_stores(record)
            if stores is not None:
                return record, stores

        for stale in (synthetic_dir, selected_dir):
            shutil.rmtree(stale, ignore_errors=True)
        model = feature_model()
        if model is None:  # the real arm's result was reused, so its model is not in memory: train it again
            (cell.directory / "results" / f"real-seed-{config.seeds[0]}.json").unlink()
            model = feature_model()
        batch = config.batch_size

        def scorer(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return (predict_proba(model, images, batch_size=batch, device=self.device),
                    extract_features(model, images, batch_size=batch, device=self.device))

        if cell.ready is None:
            synthetic = augment(cell.directory / "gan", synthetic_dir, augment_config, real=cell.train_store,
                                scorer=scorer, progress=self.progress)
        else:
            synthetic = cell.ready
        generator_slides = set(map(str, synthetic.header.provenance.get("training_slides", [])))
        _check_generator(generator_slides, cell, synthetic.path)
        stores = {"synthetic": synthetic}
        if "selected" in config.arms:
            stores["selected"] = select_synthetic(synthetic, cell.train_store, selected_dir, augment_config,
                                                  scorer=scorer, progress=self.progress)
        feature_sha = state_dict_sha256(model)
        rng = np.random.default_rng(config.split_seed)
        real_images = train[0][np.sort(rng.permutation(len(train[0]))[:FIDELITY_SAMPLES])]
        real_features = extract_features(model, real_images, batch_size=batch, device=self.device)
        fidelity = {}
        for name, chosen in stores.items():
            sample = np.sort(rng.permutation(len(chosen))[:FIDELITY_SAMPLES])
            if len(sample) < 5:
                continue  # too few patches kept for any fidelity metric
            fake = extract_features(model, chosen.images(sample), batch_size=batch, device=self.device)
            fidelity[name] = {**fidelity_metrics(real_features, fake, seed=config.split_seed),
                              "feature_network": feature_sha[:12]}
        record = {"key": key, "cell": cell.name, "fold": cell.fold, "budget": cell.budget,
                  "stores": {name: str(chosen.path) for name, chosen in stores.items()},
                  "store_sha256": {name: chosen.content_hash for name, chosen in stores.items()},
                  "feature_network_sha256": feature_sha, "fidelity": fidelity,
                  "leakage": {"train store": cell.train_store.content_hash[:12],
                              "generator": source["generator"],
                              "generator store": str(synthetic.header.provenance.get("training_store_sha256", ""))[:12],
                              "checkpoint": str(synthetic.header.provenance.get("checkpoint_sha256", ""))[:12],
                              "synthetic store": synthetic.content_hash[:12],
                              "generator slides": len(generator_slides), "test slides": len(cell.test_slides),
                              "shared with test": len(generator_slides & cell.test_slides)}}
        write_json_atomic(cell.directory / "synthetic.json", record)
        return record, stores


def _recorded_stores(record: dict[str, Any]) -> dict[str, PatchStore] | None:
    """The stores a generator record names, opened, or None unless each is complete with the recorded contents."""
    try:
        stores = {name: PatchStore(path) for name, path in record.get("stores", {}).items()}
    except StoreError:
        return None
    if any(store.content_hash != record["store_sha256"][name] for name, store in stores.items()):
        return None
    return stores


def _sample_patches(store: PatchStore, rng: np.random.Generator) -> np.ndarray:
    """Up to ``SAMPLE_GRID`` random patches of ``store``, ordered by class, for the sample figure."""
    chosen = np.sort(rng.permutation(len(store))[:SAMPLE_GRID])
    return store.images(chosen[np.argsort(store.labels[chosen], kind="stable")])


def _row(result: dict[str, Any]) -> dict[str, Any]:
    """A report row: a result without its key and test probabilities."""
    return {key: value for key, value in result.items() if key not in ("key", "probabilities")}


def _protocol(store: PatchStore, config: EvaluateConfig) -> dict[str, Any]:
    """What was run, in words, for the report's protocol section."""
    folds = config.fold_indices()
    return {
        "store": f"{store.path} ({len(store)} patches, classes {', '.join(store.class_names)})",
        "splits": f"StratifiedGroupKFold by {config.group_by}, {config.folds} folds (seed {config.split_seed}); "
                  f"folds run: {', '.join(map(str, folds))}",
        "label budgets": ", ".join(f"{100 * b:g}%" for b in config.budgets) + f" of each fold's training "
                         f"{config.group_by}s (nested)",
        "validation": f"{100 * config.validation_fraction:g}% of the training {config.group_by}s, for early stopping",
        "arms": ", ".join(config.arms), "seeds": ", ".join(map(str, config.seeds)),
        "classifier": f"{config.network}, up to {config.epochs} epochs, patience {config.patience}, batch "
                      f"{config.batch_size}, AdamW lr {config.lr:g}, class-balanced cross-entropy",
        "generator": f"class-conditional GAN, {config.gan_steps} steps, trained per fold and budget on that "
                     "budget's training patches only" + (" (ready stores for some cells)" if config.synthetic else ""),
        "synthetic patches": (f"{config.synthetic_per_class} per class" if config.synthetic_per_class
                              else "per class as many as the largest real class of the budget")
                             + f"; selection at confidence >= {config.min_confidence}, feature quantile "
                               f"{config.feature_quantile}",
    }


def run_evaluation(store: PatchStore | str | Path, out: str | Path, config: EvaluateConfig | None = None, *,
                   progress: bool = True) -> Path:
    """Run the evaluation protocol on ``store`` and write the report into ``out``; returns ``out``.

    Every check (options, group column, ready synthetic stores, generator leakage) runs before the first
    classifier or generator is trained. Rerunning the same command resumes: finished generators, synthetic
    stores and classifier results under ``out/work`` are reused when their inputs are unchanged.
    """
    store = store if isinstance(store, PatchStore) else PatchStore(store)
    config = config or EvaluateConfig()
    out = Path(out)
    cells = plan(store, config, out / "work")
    evaluation = Evaluation(store, config, progress)
    rows: list[dict[str, Any]] = []
    fidelity: dict[str, Any] = {}
    leakage: dict[str, Any] = {}
    generators: dict[str, Any] = {}
    samples = None
    for cell in cells:
        cell_rows, generator = evaluation.run_cell(cell)
        rows += cell_rows
        if generator is None:
            continue
        fidelity.update({f"{cell.name}, {name}": dict(sorted(values.items()))
                         for name, values in generator["fidelity"].items()})
        leakage[cell.name] = {column: generator["leakage"][column] for column in LEAKAGE_COLUMNS}
        generators[cell.name] = {"stores": generator["store_sha256"],
                                 "feature_network_sha256": generator["feature_network_sha256"]}
        if samples is None:
            rng = np.random.default_rng(config.split_seed)
            samples = (_sample_patches(cell.train_store, rng),
                       _sample_patches(PatchStore(generator["stores"]["synthetic"]), rng))
    record = run_record(config_to_dict(config), inputs={"store": str(store.path.resolve()),
                                                        "store_sha256": store.content_hash})
    provenance = {"store": record["inputs"]["store"], "store_sha256": store.content_hash,
                  "command": record["command"], "created": record["created"], "host": record["host"],
                  "split_seed": config.split_seed, "seeds": config.seeds,
                  "config": json.dumps(record["config"], sort_keys=True), "generators": generators}
    write_report(out, rows, class_names=store.class_names, protocol=_protocol(store, config),
                 provenance=provenance, fidelity=fidelity or None, leakage=leakage or None, samples=samples,
                 seed=config.split_seed)
    return out
