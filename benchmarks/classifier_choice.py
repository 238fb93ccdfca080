"""Which classifier input and training, chosen on training-side data of fold 0 only.

On a CRCHistoPhenotypes store cut at the largest field of view (96 px at 0.5 µm/px, ``--border reflect`` so
every annotated nucleus is kept), with the evaluation's fixed split (``Splits``: 5 folds, seed 0): fold 0's
training images are split once more by image into a fitting part (80%) and a validation part (20%), and every
candidate trains on the fitting part (all of it: "100%", or the first 10% of its images in draw 0's order) and
is scored on the validation images. The test fold is never read. Stages, each deciding on macro-F1 averaged
over the two budgets (one classifier configuration serves every budget of a profile):

1. **view**: 32, 48, 64 and 96 px centre crops of the same nuclei;
2. **input and imbalance** at the chosen view: the gaussian nucleus marker channel, class weighting
   ``inverse`` / ``sqrt`` / ``none``, and for each trained network, without retraining, test-time augmentation
   (``dihedral``, ``dihedral+shift``) and post-hoc logit adjustment tau in {0, 0.5, 1};
3. **steps**: the chosen configuration at 400 and 1,600 steps, chosen per budget.

Every run is one process with one torch thread; each finished run is a JSON file under ``--work``, so an
interrupted benchmark resumes. Writes ``docs/results/classifier-choice/classifier_choice.json`` and ``.png``::

    python benchmarks/classifier_choice.py --store ../crc-bench/crc-store-96 [--workers 2] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "results" / "classifier-choice"
VIEWS = (32, 48, 64, 96)
TTA_MODES = ("none", "dihedral", "dihedral+shift")
TAUS = (0.0, 0.5, 1.0)
SECOND_STAGE = ({"marker": "gaussian"}, {"class_weighting": "sqrt"}, {"class_weighting": "none"})
BASE = {"network": "resnet10-w0.5", "steps": 400, "batch_size": 64, "augmentation": "geometric+stain"}


def training_side(store_path: str, split_seed: int = 0) -> dict[str, np.ndarray]:
    """Patch indices of fold 0's training side, split by image into fit (80%) and validation (20%) parts,
    and the fit part's 10% budget (draw 0), all from the evaluation's store-independent split."""
    from bioaug.evaluate.splits import Splits
    from bioaug.store import PatchStore

    store = PatchStore(store_path)
    groups = np.asarray(store.slides, dtype=object)
    outer = Splits.make(groups, store.labels, folds=5, seed=split_seed, group_by="slide", draws=[0])
    train, _test = outer.fold_indices(groups, 0)
    inner = Splits.make(groups[train], store.labels[train], folds=5, seed=split_seed + 1, group_by="slide",
                        draws=[0])
    fit, validate = (train[part] for part in inner.fold_indices(groups[train], 0))
    return {"fit": fit, "validate": validate, "budget": fit[inner.budget_indices(groups[fit], 0, 0, 0.1)]}


def variant_logits(model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(variants, N, classes) logits of a ``PatchClassifier`` for every crop its TTA mode averages over."""
    import torch

    from bioaug.classify.model import centre_crop

    size = model.input_size(images.shape[1])
    parts = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(centre_crop(images[start:start + batch_size], size).copy())
            inputs = model._prepare(batch.permute(0, 3, 1, 2).float().div_(255.0))
            parts.append(np.stack([model.network(v).numpy() for v in model.variants(inputs)]))
    return np.concatenate(parts, axis=1).astype(np.float64)


def run_candidate(store_path: str, options: dict, budget: str, seed: int, out: str) -> dict:
    """Train one candidate, score it on the validation images with every TTA mode and tau; save to ``out``."""
    import torch

    torch.set_num_threads(1)
    from bioaug.classify import ClassifierConfig, train_classifier
    from bioaug.evaluate.metrics import classification_metrics
    from bioaug.evaluate.stats import bootstrap_metric_ci
    from bioaug.provenance import write_json_atomic
    from bioaug.store import PatchStore

    store = PatchStore(store_path)
    parts = training_side(store_path)
    rows = parts["fit"] if budget == "100%" else parts["budget"]
    config = ClassifierConfig(**{**BASE, **options, "seed": seed, "tta": "none"})
    started = time.process_time()
    model, history = train_classifier(store.images(rows), store.labels[rows], None, None, len(store.class_names),
                                      config, progress=False)
    seconds = time.process_time() - started
    validate = parts["validate"]
    images, labels = store.images(validate), store.labels[validate]
    groups = np.asarray(store.slides[validate], dtype=object)
    scores = {}
    model.tta = "dihedral+shift" if config.view + 2 * config.tta_shift <= store.patch_size else "dihedral"
    logits = variant_logits(model, images)  # every TTA variant's logits once; TTA modes and tau reuse them
    log_prior = model.log_prior.numpy().astype(np.float64)
    for tta, count in zip(TTA_MODES, (1, 8, 12)):
        if count > len(logits):
            continue
        for tau in TAUS:
            adjusted = logits[:count] - tau * log_prior
            adjusted = np.exp(adjusted - adjusted.max(-1, keepdims=True))
            probabilities = (adjusted / adjusted.sum(-1, keepdims=True)).mean(0)
            metrics = classification_metrics(labels, probabilities, store.class_names)
            low, high = bootstrap_metric_ci("macro_f1", labels, probabilities, groups=groups, seed=seed)
            scores[f"{tta} tau={tau:g}"] = {"macro_f1": metrics["macro_f1"], "macro_f1_ci": [low, high],
                                            "weighted_f1": metrics["weighted_f1"],
                                            "balanced_accuracy": metrics["balanced_accuracy"],
                                            "per_class_f1": metrics["per_class_f1"]}
    result = {"options": options, "budget": budget, "seed": seed, "steps": history["steps_run"],
              "train_cpu_seconds": round(seconds, 1), "n_fit_images": int(len(set(store.slides[rows]))),
              "n_fit": int(len(rows)), "n_validate_images": int(len(set(groups))), "n_validate": int(len(validate)),
              "scores": scores}
    write_json_atomic(Path(out), result)
    return result


def _name(options: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(options.items())) or "base"


class Runner:
    """Runs candidates ``workers`` at a time, reusing finished ones from ``work``."""

    def __init__(self, store: str, work: Path, workers: int, seed: int) -> None:
        self.store, self.work, self.workers, self.seed = store, work, workers, seed
        self.results: list[dict] = []
        work.mkdir(parents=True, exist_ok=True)

    def run(self, jobs: list[tuple[dict, str]]) -> list[dict]:
        """Results of every (options, budget) in ``jobs`` (in order), training those not yet done."""
        paths = [self.work / f"{_name(o).replace(', ', '_').replace('=', '-')}-{b.rstrip('%')}-seed-{self.seed}.json"
                 for o, b in jobs]
        with ProcessPoolExecutor(self.workers) as pool:
            futures = {path: pool.submit(run_candidate, self.store, options, budget, self.seed, str(path))
                       for (options, budget), path in zip(jobs, paths) if not path.is_file()}
            for path, future in futures.items():
                result = future.result()
                best = max(result["scores"].values(), key=lambda s: s["macro_f1"])
                print(f"{result['budget']:>5} {_name(result['options']):<48} macro-F1 "
                      f"{result['scores']['none tau=0']['macro_f1']:.3f} (best TTA/tau {best['macro_f1']:.3f}), "
                      f"{result['train_cpu_seconds']:.0f} CPU s", flush=True)
        done = [json.loads(path.read_text()) for path in paths]
        self.results += [r for r in done if r not in self.results]
        return done


def _plain(result: dict) -> float:
    return result["scores"]["none tau=0"]["macro_f1"]


def _best_options(results: list[dict]) -> dict:
    """The options whose macro-F1 (no TTA), averaged over the budgets they ran at, is highest."""
    by_options: dict[str, list[dict]] = {}
    for result in results:
        by_options.setdefault(_name(result["options"]), []).append(result)
    best = max(by_options.values(), key=lambda runs: np.mean([_plain(r) for r in runs]))
    return best[0]["options"]


def plot(results: list[dict], path: Path) -> None:
    """Macro-F1 (no TTA) and the best TTA of every candidate at 100% and 10%, one bar pair each."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2))
    axes = figure.subplots(1, 2, sharey=True)
    for axis, budget in zip(axes, ("100%", "10%")):
        chosen = [r for r in results if r["budget"] == budget]
        names = [f"{_name(r['options'])}" for r in chosen]
        plain = [_plain(r) for r in chosen]
        tta = [r["scores"].get("dihedral tau=0", r["scores"]["none tau=0"])["macro_f1"] for r in chosen]
        positions = np.arange(len(chosen))
        axis.barh(positions - 0.2, plain, height=0.4, label="no TTA")
        axis.barh(positions + 0.2, tta, height=0.4, label="dihedral TTA")
        axis.set_yticks(positions, names, fontsize=7)
        axis.set_xlim(0.3, 0.8)
        axis.set_xlabel("macro-F1, fold 0 validation images (training side)")
        axis.set_title(f"{budget} of the fitting images")
        axis.grid(alpha=0.3, axis="x")
    axes[0].legend(fontsize=8)
    with open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="CRCHistoPhenotypes store cut at 96 px (bioaug tile "
                                                       "--label-by points --patch-size 96 --border reflect)")
    parser.add_argument("--work", type=Path, default=REPO.parent / "crc-bench" / "classifier-choice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=BASE["steps"], help="steps of every run but the long ones")
    parser.add_argument("--long-steps", type=int, default=1600)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    BASE["steps"] = args.steps
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runner = Runner(args.store, args.work, args.workers, args.seed)

    both = ("100%", "10%")
    views = runner.run([({"view": view}, budget) for view in VIEWS for budget in both])
    view = _best_options(views)["view"]
    stage2 = runner.run([({"view": view, **option}, budget) for option in SECOND_STAGE for budget in both])
    chosen = _best_options([r for r in views if r["options"]["view"] == view] + stage2)
    long = {**chosen, "steps": args.long_steps}
    stage3 = runner.run([(long, budget) for budget in both])
    at_view = [r for r in runner.results if r["options"] in (chosen, long)]
    best_steps = {budget: max((r for r in at_view if r["budget"] == budget), key=_plain)["steps"] for budget in both}
    final = [r for r in stage3 if r["budget"] == "100%"][0]
    tta_choice = max(final["scores"], key=lambda k: final["scores"][k]["macro_f1"])

    record = {"benchmark": "classifier input and training choice on fold 0's training side (CRCHistoPhenotypes)",
              "store": os.path.relpath(args.store, REPO), "seed": args.seed, "base": BASE,
              "protocol": "fold 0 of the fixed 5-fold split (seed 0); its training images split by image 80/20 "
                          "into fit and validation; 100% = every fit image, 10% = the first 10% of them in draw "
                          "0's order; scores on the validation images, never the test fold",
              "chosen": {"view": view, "input_and_weighting": chosen, "steps_per_budget": best_steps,
                         "tta_and_tau_at_100%": tta_choice},
              "runs": runner.results}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "classifier_choice.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(runner.results, args.results / "classifier_choice.png")
    print(json.dumps(record["chosen"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
