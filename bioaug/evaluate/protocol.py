"""``bioaug evaluate``: the whole protocol, from a real patch store to the report.

For every evaluated fold (StratifiedGroupKFold over slides or patients) and label budget (a nested fraction of
the fold's training groups) a cell is prepared, then every arm (``bioaug.evaluate.arms``) is trained for every
seed on the same splits, for the same number of optimiser steps:

1. the budget's training patches become a store of their own (``train-store``), and with an unlabelled store
   the fold's other training slides give the cell's unlabelled pool (``pool-store``); both record by content
   hash exactly which slides they hold, and the pool is refused if it holds a test slide;
2. the ``classic`` classifier of each seed labels the pool; its confident patches fill a share of every batch
   of the ``pseudo_label`` arm;
3. with generator arms, a GAN is trained on the budget's patches plus the first seed's confidently
   pseudo-labelled pool (``gan-store``), or a ready synthetic store is taken from the config; either way the
   generator's training slides are checked against the fold's test slides before any classifier sees its
   patches (a leak is a one-line error, not a footnote);
4. the first seed's ``classic`` classifier (``real`` when classic is not run) scores the synthetic patches: it
   is the feature space of the fidelity metrics and the scorer of selection;
5. each (arm, seed) classifier is tested on the fold's test patches; its metrics go to a small JSON file.

Steps 3 and 4 are ``bioaug.evaluate.generators``; a cell, and the data its steps share, ``bioaug.evaluate.cells``.

Work layout under ``out/work``, a directory ``<cell>`` = ``fold-<k>/draw-<d>/budget-<b:.2f>`` per cell
(deterministic, so a rerun resumes and finished work is reused)::

    <cell>/train-store     the budget's training patches (subset of the input store)
    <cell>/pool-store      the cell's unlabelled pool (subset of the unlabelled store)
    <cell>/gan-store       what the generator trains on (budget + pseudo-labelled pool)
    <cell>/gan-<key>       GAN run, one per generator (the options a resume cannot change and the gan-store's
                           content hash make the key)
    <cell>/synthetic       augment output (synthetic patches, audit)
    <cell>/selected        the synthetic patches kept by selection
    <cell>/synthetic.json  fidelity, hashes and leakage check of this cell's generator
    <cell>/results/<arm>-seed-<s>.json   metrics and test probabilities of one classifier
    <cell>/results/<arm>-seed-<s>.pt     the trained classifier's weights
    <cell>/results/pseudo-seed-<s>.npz   the pool patches that seed's classifier labelled

Every result file carries a key of everything it depends on (settings and input hashes) and is reused only
when the key matches. The report (``report.md``, ``report.json``, ``table.tex``, PNGs) goes into ``out``.
With a Dask client or ``scheduler`` the same steps run as tasks on the cluster's workers
(``bioaug.evaluate.graph`` and ``distributed``), and the report is the same.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..classify import load_classifier, predict_proba, save_classifier, state_dict_sha256, train_classifier
from ..cluster import connect
from ..config import config_to_dict, flag
from ..errors import CheckpointError, ConfigError, StoreError
from ..gan.run import CONFIG_NAME
from ..progress import progress_bar
from ..provenance import atomic_path, run_record, sha256_file, sha256_json, write_json_atomic
from ..store import PatchStore, check_compatible, subset_store
from .arms import ARMS, REFERENCE_ARMS, Arm
from .baselines import colour_baseline
from .cells import PREDICTION_BATCH, Cell, CellData, cell_directory, read_result
from .config import EvaluateConfig
from .external import ExternalSet, open_external
from .generators import CellGenerators, check_generator, gan_slides
from .graph import cell_keys, reference_arm
from .metrics import classification_metrics, group_confusion, metric_from_confusion
from .pool import check_pool, check_pool_leakage, pool_indices, pool_predictions, slide_hashes
from .report import write_report
from .splits import Splits, check_disjoint_groups, validation_split

log = logging.getLogger("bioaug")

#: Real and synthetic patches in the side-by-side sample figure.
SAMPLE_GRID = 64
#: Columns of the report's leakage table, in order (result files store them with sorted keys).
LEAKAGE_COLUMNS = ("train store", "pool store", "generator", "generator store", "checkpoint", "synthetic store",
                   "generator slides", "pool slides", "test slides", "shared with test")
#: Arms whose trained networks stay in memory for the cell: pseudo-labels, selection and fidelity reuse them
#: (every network is also saved beside its result, ``<arm>-seed-<s>.pt``).
KEPT_MODELS = ("real", "classic")


def resolve_splits(store: PatchStore, config: EvaluateConfig, default: Path) -> tuple[Splits, Path]:
    """The evaluation's split and where it is saved: read from ``config.splits`` when that file exists, else
    made from the store's group names and ``split_seed`` and saved there (or at ``default``)."""
    groups = _groups(store, config.group_by)
    path = Path(config.splits) if config.splits else default
    if config.splits and path.is_file():
        splits = Splits.load(path)
        splits.check(groups, store.path, path, folds=config.folds, draws=config.budget_draws,
                     group_by=config.group_by)
        if (splits.seed, splits.draw_policy) != (config.split_seed, config.draw_policy):
            log.warning("%s: split_seed %d and draw_policy %s come from the split file (the config's %d and %s "
                        "are not used for folds and draws)", path, splits.seed, splits.draw_policy,
                        config.split_seed, config.draw_policy)
        return splits, path
    splits = Splits.make(groups, store.labels, folds=config.folds, seed=config.split_seed, group_by=config.group_by,
                         draws=config.budget_draws, draw_policy=config.draw_policy)
    splits.save(path)
    return splits, path


def _groups(store: PatchStore, group_by: str) -> np.ndarray:
    """The group name of every patch: its slide, or a manifest column such as ``patient``."""
    if group_by == "slide":
        return np.asarray(store.slides, dtype=object)
    if group_by not in store.manifest:
        raise ConfigError(flag("group_by"), f"{store.path} has no manifest column {group_by!r}; columns: "
                                            f"{', '.join(store.manifest)}")
    groups = np.asarray([str(value) for value in store.manifest[group_by]], dtype=object)
    if any(value in ("", "nan") for value in groups):
        raise ConfigError(flag("group_by"), f"column {group_by!r} of {store.path} is empty for some patches")
    return groups


def _check_arms(config: EvaluateConfig) -> None:
    """Arms that need another arm's classifier (pseudo-labels come from ``classic``) must run it too."""
    if any(ARMS[arm].needs_pool for arm in config.arms) and "classic" not in config.arms:
        raise ConfigError(flag("arms"), "pseudo_label needs the classic arm (its classifier labels the pool)")


def plan(store: PatchStore, config: EvaluateConfig, work: Path) -> list[Cell]:
    """Every (fold, budget) cell, with its training and pool stores written and every generator checked.

    Nothing is trained here: a bad group column, an unlabelled store of other slides or patch size or with a
    copy of a test image, a ready synthetic store of other classes or one whose generator saw a test slide,
    or a GAN run left in the work directory by another split fails now.
    """
    config.validate()
    _check_arms(config)
    config.classifier.for_patches(store.patch_size, store.mpp, store.path)  # the view fits the patches
    groups = _groups(store, config.group_by)
    splits, _ = resolve_splits(store, config, work.parent / "splits.json")
    unlabelled = PatchStore(config.unlabelled) if config.unlabelled else None
    if unlabelled is not None:
        check_pool(unlabelled, store, config.unlabelled)
    hashes = slide_hashes(store)
    cells = []
    for fold, draw, budget in cell_keys(splits, config):
        train, test = splits.fold_indices(groups, fold)
        check_disjoint_groups(groups, train, test, "fold")
        test_slides = set(map(str, store.slides[test]))
        chosen = splits.budget_indices(groups, fold, draw, budget)
        directory = cell_directory(work, fold, draw, budget)
        train_store = subset_store(store, chosen, directory / "train-store", provenance={
            "fold": fold, "draw": draw, "budget": budget, "split_seed": splits.seed})
        ready = config.ready_synthetic(fold, budget, draw)
        cell = Cell(fold, budget, draw, directory, chosen, test, train_store, test_slides,
                    PatchStore(ready) if ready else None,
                    test_hashes={hashes[name] for name in test_slides if name in hashes})
        if unlabelled is not None:
            rows = pool_indices(unlabelled, set(map(str, store.slides[train])), set(map(str, store.slides[chosen])))
            cell.pool = subset_store(unlabelled, rows, directory / "pool-store", provenance={
                "fold": fold, "draw": draw, "budget": budget, "split_seed": splits.seed,
                "role": "unlabelled pool"})
            check_pool_leakage(cell.pool, test_slides, cell.test_hashes, directory / "pool-store")
        if cell.ready is not None:
            check_compatible(cell.ready, store)
            if "training_slides" not in cell.ready.header.provenance:
                raise CheckpointError(ready, "records no generator training slides: cannot rule out that "
                                             "its generator saw test slides")
            check_generator(set(map(str, cell.ready.header.provenance["training_slides"])), cell, ready)
        elif config.uses_generator():
            for run in sorted(path.parent for path in directory.glob(f"gan-*/{CONFIG_NAME}")):
                check_generator(gan_slides(run), cell, run)
        cells.append(cell)
    return cells


@dataclass
class Extra:
    """Patches an arm adds to every batch, and the hash that identifies them in the result's key."""

    images: np.ndarray
    labels: np.ndarray
    sha256: str


class Evaluation:
    """Runs the cells of one evaluation; holds the store, config and the settings every result depends on.

    A cell's steps get its loaded patches (:meth:`cell_data`) as an argument, so each can run alone, as a Dask
    task does (``bioaug.evaluate.distributed``); the generator steps are ``generators``.
    """

    def __init__(self, store: PatchStore, config: EvaluateConfig, progress: bool) -> None:
        self.store, self.config, self.progress = store, config, progress
        self.n_classes = len(store.class_names)
        self.device = None if config.device == "auto" else config.device
        self.groups = _groups(store, config.group_by)
        self.classifier = config.classifier.for_patches(store.patch_size, store.mpp, store.path)
        self.settings = sha256_json({"store": store.content_hash, "classifier": config_to_dict(self.classifier),
                                     "classic_recipe": config.classic_recipe,
                                     "synthetic_fraction": config.synthetic_fraction,
                                     "split": [config.folds, config.split_seed, config.group_by,
                                               config.validation_fraction]})
        self.generators = CellGenerators(config, self.settings, store.class_names, device=self.device,
                                         progress=progress)

    # -- one cell -------------------------------------------------------------------------------------------------

    def run_cell(self, cell: Cell, data: CellData, bar: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Rows of every (arm, seed) of ``cell`` and its generator record (None without generator arms);
        ``bar`` is advanced once per classifier."""
        generator, stores = None, {}
        if self.config.uses_generator():
            generator, stores = self.generators.prepare_synthetic(cell, self.reference_model(cell, data),
                                                                  data.train_images)
        rows = []
        for seed in self.config.seeds:
            for name in arm_order(self.config):
                arm = ARMS[name]
                rows.append(self.run_arm(cell, data, arm, seed, self.extra(cell, data, arm, seed, stores), bar)[0])
        return rows, generator

    def cell_data(self, cell: Cell) -> CellData:
        """``cell``'s training and test patches and each seed's validation split: what every step of it reads."""
        groups = self.groups
        test_groups = np.asarray(groups[cell.test], dtype=str)
        if self.config.classifier.patience:
            position = {index: i for i, index in enumerate(cell.train)}
            splits = {seed: validation_split(self.store.labels, groups, cell.train, self.config.validation_fraction,
                                             seed) for seed in self.config.seeds}
            positions = {seed: tuple(np.array([position[i] for i in part], dtype=np.int64) for part in split)
                         for seed, split in splits.items()}
        else:  # a fixed step budget needs no validation images: every labelled image trains
            everything = np.arange(len(cell.train))
            positions = {seed: (everything, everything[:0]) for seed in self.config.seeds}
        return CellData(self.store.images(cell.train), self.store.labels[cell.train], self.store.images(cell.test),
                        self.store.labels[cell.test], test_groups, sha256_json(sorted(set(test_groups))), positions)

    def extra(self, cell: Cell, data: CellData, arm: Arm, seed: int, stores: dict[str, PatchStore]) -> Extra | None:
        """The patches ``arm`` adds to every batch with ``seed``: pseudo-labelled pool patches and the synthetic
        ``stores`` it names, pooled."""
        return _pooled([self.pseudo_labels(cell, data, seed) if source == "pseudo" else
                        Extra(stores[source].images(), stores[source].labels, stores[source].content_hash)
                        for source in arm.sources])

    def run_arm(self, cell: Cell, data: CellData, arm: Arm, seed: int, extra: Extra | None,
                bar: Any = None) -> tuple[dict[str, Any], nn.Module | None]:
        """Train and test ``arm`` with ``seed``; (report row, model or None when the result was reused).

        The result file is reused when its key (settings, arm, seed, training and extra patches) matches.
        ``bar`` is advanced when given (not for a model trained early because a later step needs it).
        """
        path = cell.directory / "results" / f"{arm.name}-seed-{seed}.json"
        steps = self.config.steps_for(cell.budget)
        key = sha256_json({"settings": self.settings, "arm": dataclasses.asdict(arm), "seed": seed, "steps": steps,
                           "train": cell.train_store.content_hash, "test": data.test_sha256,
                           "extra": extra.sha256 if extra else None})
        done = read_result(path)
        if done is not None and done.get("key") == key:
            _advance(bar)
            return _row(done, data), None
        images, labels = data.train_images, data.train_labels
        started = time.perf_counter()
        model, info = None, {}
        if not arm.network:
            probabilities = colour_baseline(images, labels, data.test_images, self.n_classes, seed=seed)
            info = {"n_train": int(len(images)), "n_extra": 0}
        else:
            fit, val = data.splits[seed]
            config = dataclasses.replace(self.classifier, seed=seed, steps=steps,
                                         augmentation=self.config.classic_recipe if arm.classic else "none")
            fit_images, fit_labels, fraction = images[fit], labels[fit], self.config.synthetic_fraction
            extra_data = (extra.images, extra.labels) if extra is not None and len(extra.images) else None
            if arm.extra_only:
                if extra_data is None:
                    raise StoreError(cell.directory, f"arm {arm.name} has no synthetic patches to train on")
                fit_images, fit_labels, extra_data, fraction = extra_data[0], extra_data[1], None, 0.0
            model, history = train_classifier(fit_images, fit_labels, images[val], labels[val], self.n_classes,
                                              config, extra=extra_data, extra_fraction=fraction,
                                              device=self.device, progress=self.progress)
            probabilities = predict_proba(model, data.test_images, batch_size=PREDICTION_BATCH, device=self.device)
            info = {"steps": history["steps_run"], "batch": history["batch"], "passes": history["passes"],
                    "best_step": history["best_step"], "stopped_early": history["stopped_early"],
                    "n_train": history["n_train"], "n_extra": history["n_extra"],
                    "augmentation": config.augmentation, "network": config.network,
                    "model_sha256": state_dict_sha256(model)}
            save_classifier(model, path.with_suffix(".pt"))  # for external tests added later, and reuse
            if arm.name in KEPT_MODELS:
                data.models[(arm.name, seed)] = model
        result = {"key": key, "arm": arm.name, "fold": cell.fold, "draw": cell.draw, "budget": cell.budget,
                  "seed": seed,
                  "seconds": round(time.perf_counter() - started, 2), **info,
                  **classification_metrics(data.test_labels, probabilities, self.store.class_names),
                  "probabilities": np.round(probabilities, 5).tolist()}
        write_json_atomic(path, result)
        log.info("%s, %s seed %d: macro-F1 %.3f, balanced accuracy %.3f (%.0f s)", cell.name, arm.name, seed,
                 result["macro_f1"], result["balanced_accuracy"], result["seconds"])
        _advance(bar)
        return _row(result, data), model

    def model(self, cell: Cell, data: CellData, name: str, seed: int) -> nn.Module:
        """The trained classifier of arm ``name`` and ``seed`` in this cell: in memory, from disk, or trained."""
        if (name, seed) in data.models:
            return data.models[(name, seed)]
        path = cell.directory / "results" / f"{name}-seed-{seed}"
        done = read_result(path.with_suffix(".json"))
        if done is not None and path.with_suffix(".pt").is_file():
            model = load_classifier(path.with_suffix(".pt"), self.classifier, self.n_classes)
            if state_dict_sha256(model) == done.get("model_sha256"):
                data.models[(name, seed)] = model
                return model
        path.with_suffix(".json").unlink(missing_ok=True)
        model = self.run_arm(cell, data, ARMS[name], seed, None)[1]
        if model is None:
            raise ConfigError(flag("arms"), f"arm {name} trains no network, so it cannot label or score patches")
        return model

    def reference_model(self, cell: Cell, data: CellData) -> nn.Module:
        """The first seed's classic classifier (real when classic is not run): scorer and feature network."""
        return self.model(cell, data, reference_arm(self.config), self.config.seeds[0])

    def generator_store(self, cell: Cell) -> PatchStore:
        """The store ``cell``'s GAN trains on (its budget's patches and the pool patches the reference classifier
        labels confidently), written in the cell's directory as the evaluation itself writes it."""
        return self.generators.generator_store(cell, self.reference_model(cell, self.cell_data(cell)))[0]

    # -- external test stores ---------------------------------------------------------------------------------------

    def test_external(self, cell: Cell, data: CellData, rows: list[dict[str, Any]],
                      external: ExternalSet) -> list[dict[str, Any]]:
        """Every (arm, seed) classifier of ``cell`` tested on ``external``; predictions cached per classifier.

        Nothing is trained: networks are loaded from their saved weights, the colour baseline (a seconds-long
        scikit-learn fit) is refitted on the same training patches.
        """
        tested = []
        images = None
        for row in rows:
            arm, seed = ARMS[row["arm"]], row["seed"]
            result = cell.directory / "results" / f"{arm.name}-seed-{seed}.json"
            done = read_result(result) or {}
            path = result.with_name(f"{arm.name}-seed-{seed}.external-{external.name}.json")
            key = sha256_json({"result": done.get("key"), "external": external.store.content_hash,
                               "labels": sha256_json(external.labels.tolist())})
            cached = read_result(path)
            if cached is None or cached.get("key") != key:
                images = external.images() if images is None else images
                if arm.network:
                    weights = result.with_suffix(".pt")
                    if not weights.is_file():
                        raise StoreError(weights, "missing: this classifier's weights were not kept, so it cannot "
                                                  "be tested on an external store; delete its result to retrain")
                    model = load_classifier(weights, self.classifier, self.n_classes)
                    probabilities = predict_proba(model, images, batch_size=PREDICTION_BATCH, device=self.device)
                else:
                    probabilities = colour_baseline(data.train_images, data.train_labels, images, self.n_classes,
                                                    seed=seed)
                metrics = classification_metrics(external.labels, probabilities, self.store.class_names)
                metrics["macro_f1"] = float(metric_from_confusion("macro_f1", metrics["confusion_matrix"],
                                                                  external.present))
                cached = {"key": key, "external": external.name, **metrics,
                          "probabilities": np.round(probabilities, 5).tolist()}
                write_json_atomic(path, cached)
            test_row = {name: value for name, value in cached.items() if name not in ("key", "probabilities")}
            tested.append({**{k: row[k] for k in ("arm", "fold", "draw", "budget", "seed")}, **test_row,
                           "test_set": f"external {external.name}", "classes": external.present,
                           "group_confusion": group_confusion(external.labels, np.asarray(cached["probabilities"]),
                                                              external.groups)})
        return tested

    # -- the unlabelled pool --------------------------------------------------------------------------------------

    def pseudo_labels(self, cell: Cell, data: CellData, seed: int) -> Extra:
        """Pool patches that seed's classic classifier labels with confidence >= the threshold (cached)."""
        if cell.pool is None:
            raise ConfigError(flag("unlabelled"), f"{cell.name} has no unlabelled pool to pseudo-label: give an "
                                                  "unlabelled store")
        model = self.model(cell, data, "classic", seed)
        classic = read_result(cell.directory / "results" / f"classic-seed-{seed}.json") or {}
        key = sha256_json({"pool": cell.pool.content_hash, "threshold": self.config.pseudo_label_threshold,
                           "classifier": classic.get("model_sha256")})
        path = cell.directory / "results" / f"pseudo-seed-{seed}.npz"
        if path.is_file():
            cached = np.load(path)
            if str(cached["key"]) == key:
                return Extra(cell.pool.images(cached["rows"]), cached["labels"].astype(np.int64), key)
        predicted, confidence = pool_predictions(cell.pool, model, self.device)
        rows = np.flatnonzero(confidence >= self.config.pseudo_label_threshold)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, rows=rows, labels=predicted[rows], key=key)
        return Extra(cell.pool.images(rows), predicted[rows].astype(np.int64), key)


def _advance(bar: Any) -> None:
    """One more classifier done, on ``bar`` when there is one."""
    if bar is not None:
        bar.update(1)


def _row(result: dict[str, Any], data: CellData) -> dict[str, Any]:
    """A report row: a result without key and probabilities, with its confusion matrix per test image."""
    row = {key: value for key, value in result.items() if key not in ("key", "probabilities")}
    row["group_confusion"] = group_confusion(data.test_labels, np.asarray(result["probabilities"]), data.test_groups)
    return row


def cell_generator_store(store: PatchStore, config: EvaluateConfig, work: Path, *, fold: int, draw: int,
                         budget: float, progress: bool = True) -> tuple[Cell, PatchStore]:
    """The cell (``fold``, ``draw``, ``budget``) of the evaluation of ``store`` with ``config`` in the work
    directory ``work`` (``<out>/work`` of ``run_evaluation``), and its generator's training store, made there
    exactly as the evaluation makes it, so that a later evaluation in the same place reuses it.

    For studies of the generator on an evaluation's own data (``benchmarks/generator_choice.py --cell``).
    Raises ``ConfigError`` when the evaluation has no such cell.
    """
    cells = plan(store, config, work)
    matching = [cell for cell in cells if (cell.fold, cell.draw) == (fold, draw) and np.isclose(cell.budget, budget)]
    if not matching:
        raise ConfigError(flag("budgets"), f"no cell with fold {fold}, draw {draw} and budget {budget:g} (cells: "
                                           f"{'; '.join(cell.name for cell in cells)})")
    return matching[0], Evaluation(store, config, progress=progress).generator_store(matching[0])


def arm_order(config: EvaluateConfig) -> list[str]:
    """The arms in the order a cell runs them for each seed: those whose networks later steps reuse first."""
    return sorted(config.arms, key=lambda arm: arm not in KEPT_MODELS)


def _pooled(parts: list[Extra]) -> Extra | None:
    """One arm's extra patches from its sources: the single one as it is, several pooled (hash of their hashes)."""
    if len(parts) < 2:
        return parts[0] if parts else None
    return Extra(np.concatenate([part.images for part in parts]), np.concatenate([part.labels for part in parts]),
                 sha256_json([part.sha256 for part in parts]))


def _sample_patches(store: PatchStore, rng: np.random.Generator) -> np.ndarray:
    """Up to ``SAMPLE_GRID`` random patches of ``store``, ordered by class, for the sample figure."""
    chosen = np.sort(rng.permutation(len(store))[:SAMPLE_GRID])
    return store.images(chosen[np.argsort(store.labels[chosen], kind="stable")])


def _view(classifier: Any, store: PatchStore) -> str:
    """The classifier's input in words: its field of view of the store's patches and its marker channel."""
    view = classifier.for_patches(store.patch_size, store.mpp, store.path).view
    marker = (f" plus a gaussian nucleus marker (sigma {classifier.marker_sigma:g} px)"
              if classifier.marker != "none" else "")
    return (f"a centre crop of {view} px ({view * store.mpp:g} µm) of the {store.patch_size} px patches" + marker)


def _protocol(store: PatchStore, config: EvaluateConfig) -> dict[str, Any]:
    """What was run, in words, for the report's protocol section."""
    folds = config.fold_indices()
    classifier, generator, sampling = config.classifier, config.generator, config.augment
    steps = (", ".join(f"{config.steps_for(b)} at {100 * b:g}%" for b in config.budgets) if config.budget_steps
             else str(classifier.steps))
    length = (f"{generator.time_budget:g} {generator.budget_clock} seconds of training (at most {generator.steps} "
              "steps)" if generator.time_budget else f"{generator.steps} steps")
    data = (" plus the confidently pseudo-labelled pool" if config.unlabelled and config.generator_pool
            else " only")
    validation = (f"{100 * config.validation_fraction:g}% of the training {config.group_by}s for early stopping "
                  f"(patience {classifier.patience} validations every {classifier.eval_every} steps)"
                  if classifier.patience else "none: a fixed step budget, every labelled image trains")
    return {
        "store": f"{store.path} ({len(store)} patches, classes {', '.join(store.class_names)})",
        "splits": f"{config.folds} folds by {config.group_by}, assigned from the {config.group_by} names and seed "
                  f"{config.split_seed} alone (the same for every store of these {config.group_by}s; saved in "
                  f"{config.splits or 'splits.json'}); folds run: {', '.join(map(str, folds))}",
        "label budgets": ", ".join(f"{100 * b:g}%" for b in config.budgets) + f" of each fold's training "
                         f"{config.group_by}s (nested within a draw); budget draws "
                         f"{', '.join(map(str, config.budget_draws))} ({config.draw_policy.replace('_', ' ')} "
                         "order of the training groups, an axis of its own)",
        "validation": validation,
        "arms": "; ".join(f"{name}: {ARMS[name].description}" for name in config.arms),
        "seeds": ", ".join(map(str, config.seeds)),
        "classifier": f"{classifier.network} seeing {_view(classifier, store)}, {steps} optimiser steps in every "
                      f"arm (batch {classifier.batch_size}, {100 * classifier.warmup_fraction:g}% linear warm-up "
                      f"then cosine, AdamW lr {classifier.lr:g}), {classifier.class_weighting} class weighting of "
                      f"the cross-entropy over the batch mixture, {classifier.sampler} sampling of real patches, "
                      f"test-time augmentation {classifier.tta}, logit adjustment tau "
                      f"{classifier.logit_adjustment:g}; classic "
                      f"recipe {config.classic_recipe!r}; synthetic or pseudo-labelled patches fill "
                      f"{100 * config.synthetic_fraction:g}% of every batch of the arms that use them",
        "unlabelled pool": (f"{config.unlabelled}: detected nuclei of each fold's training {config.group_by}s "
                            f"outside the budget; pseudo-labels at confidence >= {config.pseudo_label_threshold} "
                            "from the same seed's classic classifier" if config.unlabelled else "none"),
        "generator": f"{generator.preset} class-conditional GAN, {length}, per fold and budget on the budget's "
                     f"patches{data}" + (" (ready stores for some cells)" if config.synthetic else ""),
        "synthetic patches": (f"{sampling.per_class} per class" if sampling.per_class is not None
                              else f"every class up to {sampling.balance_to or 'the largest real class'}")
                             + f"; selection at confidence >= {sampling.min_confidence}, feature quantile "
                               f"{sampling.feature_quantile}",
    }


#: What running one cell gives: its report rows, its generator record (None without generator arms) and its
#: rows on each external store, by name.
CellResult = tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, list[dict[str, Any]]]]


def run_cells(evaluation: Evaluation, cells: list[Cell], externals: list[ExternalSet],
              progress: bool) -> list[CellResult]:
    """Run the cells one after the other in this process."""
    bar = progress_bar(total=len(cells) * len(evaluation.config.seeds) * len(evaluation.config.arms),
                       desc="evaluate", unit="run", disable=not progress)
    results = []
    for cell in cells:
        data = evaluation.cell_data(cell)
        rows, generator = evaluation.run_cell(cell, data, bar)
        results.append((rows, generator, {external.name: evaluation.test_external(cell, data, rows, external)
                                          for external in externals}))
    bar.close()
    return results


def run_evaluation(store: PatchStore | str | Path, out: str | Path, config: EvaluateConfig | None = None, *,
                   client: Any = None, progress: bool = True) -> Path:
    """Run the evaluation protocol on ``store`` and write the report into ``out``; returns ``out``.

    Every check (the stores' file hashes, options, group column, unlabelled pool, external stores, ready
    synthetic stores, generator leakage) runs before the first classifier or generator is trained. Rerunning
    the same command resumes: finished generators, synthetic stores and classifier results under ``out/work``
    are reused when their inputs are unchanged. With a ``dask.distributed`` ``client`` (or
    ``config.scheduler``) the cells' steps run as tasks on its workers (``bioaug.evaluate.distributed``), which
    must see ``out`` at the same path; the report is the same.
    """
    store = store if isinstance(store, PatchStore) else PatchStore(store)
    config = config or EvaluateConfig()
    out = Path(out)
    store.verify(progress=progress)  # the content hash every result records must describe these very bytes
    pool = PatchStore(config.unlabelled) if config.unlabelled else None
    if pool is not None:
        pool.verify(progress=progress)
    externals = [open_external(name, path, store, pool, config.external_classes)  # refused before plan writes
                 for name, path in config.external.items()]
    cells = plan(store, config, out / "work")
    if client is not None and config.scheduler is not None:
        raise ConfigError("--scheduler", "give one of client or scheduler")
    with ExitStack() as stack:
        if config.scheduler is not None:
            client = stack.enter_context(connect(config.scheduler))
        if client is None:
            results = run_cells(Evaluation(store, config, progress), cells, externals, progress)
        else:
            from .distributed import run_on_cluster

            results = run_on_cluster(client, store, config, cells, externals, out / "work", progress)
    external_rows: dict[str, list[dict[str, Any]]] = {external.name: [] for external in externals}
    rows: list[dict[str, Any]] = []
    fidelity: dict[str, Any] = {}
    leakage: dict[str, Any] = {}
    generators: dict[str, Any] = {}
    samples = None
    for cell, (cell_rows, generator, cell_external) in zip(cells, results):
        rows += cell_rows
        for name, tested in cell_external.items():
            external_rows[name] += tested
        if generator is None:
            continue
        fidelity.update({f"{cell.name}, {name}": dict(sorted(values.items()))
                         for name, values in generator["fidelity"].items()})
        leakage[cell.name] = {column: generator["leakage"][column] for column in LEAKAGE_COLUMNS}
        generators[cell.name] = {"stores": generator["store_sha256"], "kept": generator["kept"],
                                 "generator_data": generator["generator_data"],
                                 "feature_network_sha256": generator["feature_network_sha256"]}
        if samples is None:
            rng = np.random.default_rng(config.split_seed)
            samples = (_sample_patches(cell.train_store, rng),
                       _sample_patches(PatchStore(generator["stores"]["synthetic"]), rng))
    split_file = Path(config.splits) if config.splits else out / "splits.json"
    inputs = {"store": str(store.path.resolve()), "store_sha256": store.content_hash,
              "splits": str(split_file.resolve()), "splits_sha256": sha256_file(split_file)}
    if config.unlabelled:
        inputs |= {"unlabelled": str(Path(config.unlabelled).resolve()),
                   "unlabelled_sha256": PatchStore(config.unlabelled).content_hash}
    for external in externals:
        inputs |= {f"external {external.name}": str(external.store.path.resolve()),
                   f"external {external.name} sha256": external.store.content_hash}
    record = run_record(config_to_dict(config), inputs=inputs)
    provenance = {**inputs, "command": record["command"], "created": record["created"], "host": record["host"],
                  "split_seed": config.split_seed, "seeds": config.seeds,
                  "config": json.dumps(record["config"], sort_keys=True), "generators": generators}
    provenance["external"] = {external.name: inputs[f"external {external.name} sha256"] for external in externals}
    external_report = {external.name: {
        "rows": external_rows[external.name], "leakage": external.leakage, "path": str(external.store.path),
        "absent": [name for k, name in enumerate(store.class_names) if k not in external.present]}
        for external in externals}
    write_report(out, rows, class_names=store.class_names, protocol=_protocol(store, config),
                 provenance=provenance, fidelity=fidelity or None, leakage=leakage or None, samples=samples,
                 external=external_report or None, references=REFERENCE_ARMS, seed=config.split_seed)
    write_json_atomic(out / "config.json", record)
    return out
