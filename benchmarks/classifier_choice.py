"""Which classifier and which 'classic' augmentation recipe, chosen on training-side data only.

On CRCHistoPhenotypes, fold 0 of the evaluation's grouped 5-fold split (split seed 0) and its 10% label budget
(the same images ``bioaug evaluate`` uses): every candidate trains on the budget's images for the same number
of optimiser steps and is scored on the fold's *other training images* (never the test fold), per image-level
bootstrap. Two questions:

1. Network: the fast ``resnet10-w0.5`` against ``resnet18`` (no augmentation, same steps): seconds per run
   (ratio in the same run) and macro-F1; the fast one is the default when it is within a point of resnet18.
2. Recipe for the ``classic`` arms: ``none``, ``geometric``, ``geometric+stain`` and ``strong`` with the
   fast network, by macro-F1 and balanced accuracy. The ``classic`` arm stands for standard practice, which
   augments, so its recipe is the augmenting one with the best sum of the two (``best_augmenting_recipe``);
   whether augmenting beats ``none`` at all is reported beside it.

Runs candidates in ``--workers`` processes of one torch thread each; each finished run is a JSON file under
``--work``, so an interrupted benchmark resumes. Writes ``benchmarks/results/classifier_choice.json`` and
``.png``::

    python benchmarks/classifier_choice.py --store ../runs/crc-store [--seeds 0 1 2 3 4] [--slow-seeds 3] [--steps 400]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
NETWORKS = ("resnet10-w0.5", "resnet18")
RECIPES = ("none", "geometric", "geometric+stain", "strong")


def training_side(store_path: str, budget: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(budget indices, other training-side indices) of fold 0, exactly as the evaluation draws them."""
    from bioaug.evaluate.splits import grouped_folds, label_budget
    from bioaug.store import PatchStore

    store = PatchStore(store_path)
    groups = np.asarray(store.slides, dtype=object)
    train, _test = grouped_folds(store.labels, groups, 5, split_seed)[0]
    mask = label_budget(groups[train], budget, split_seed)
    return train[mask], train[~mask]


def run_candidate(store_path: str, network: str, recipe: str, seed: int, steps: int, budget: float,
                  out: str) -> dict:
    """Train one candidate and score it on the other training-side images; the result is also saved to ``out``."""
    import torch

    torch.set_num_threads(1)
    from bioaug.classify import ClassifierConfig, predict_proba, train_classifier
    from bioaug.evaluate.metrics import classification_metrics
    from bioaug.evaluate.stats import bootstrap_metric_ci
    from bioaug.provenance import write_json_atomic
    from bioaug.store import PatchStore

    store = PatchStore(store_path)
    fit, validate = training_side(store_path, budget, 0)
    config = ClassifierConfig(network=network, augmentation=recipe, seed=seed, steps=steps)
    started = time.perf_counter()
    model, history = train_classifier(store.images(fit), store.labels[fit], None, None, len(store.class_names),
                                      config, progress=False)
    seconds = time.perf_counter() - started
    probabilities = predict_proba(model, store.images(validate), batch_size=512)
    metrics = classification_metrics(store.labels[validate], probabilities, store.class_names)
    groups = np.asarray(store.slides[validate], dtype=object)
    low, high = bootstrap_metric_ci("macro_f1", store.labels[validate], probabilities, groups=groups, seed=seed)
    result = {"network": network, "recipe": recipe, "seed": seed, "steps": history["steps_run"],
              "train_seconds": round(seconds, 1), "n_fit": int(len(fit)), "n_validate": int(len(validate)),
              "macro_f1": metrics["macro_f1"], "macro_f1_ci": [low, high],
              "balanced_accuracy": metrics["balanced_accuracy"], "sensitivity": metrics["sensitivity"]}
    write_json_atomic(Path(out), result)
    return result


def plot(results: list[dict], path: Path) -> None:
    """Macro-F1 per candidate (mean and every seed), networks left, recipes right."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.4))
    for axis, (title, key, names, fixed) in zip(figure.subplots(1, 2), (
            ("network (no augmentation)", "network", NETWORKS, ("recipe", "none")),
            ("classic recipe (resnet10-w0.5)", "recipe", RECIPES, ("network", NETWORKS[0])))):
        for position, name in enumerate(names):
            values = [r["macro_f1"] for r in results if r[key] == name and r[fixed[0]] == fixed[1]]
            axis.scatter([position] * len(values), values, color="grey", s=12)
            if values:
                axis.bar(position, np.mean(values), alpha=0.5)
        axis.set_xticks(range(len(names)), names, rotation=15)
        axis.set_ylabel("macro-F1, other training-side images")
        axis.set_title(title)
        axis.grid(alpha=0.3, axis="y")
    with open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="CRCHistoPhenotypes patch store (bioaug tile --label-by points)")
    parser.add_argument("--work", type=Path, default=REPO.parent / "runs" / "classifier-choice")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--slow-seeds", type=int, default=3, help="resnet18 runs only the first this many seeds")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    candidates = [(n, "none") for n in NETWORKS] + [(NETWORKS[0], r) for r in RECIPES if r != "none"]
    jobs = [(n, r, s) for n, r in candidates for s in args.seeds[:args.slow_seeds if n == "resnet18" else None]]
    jobs.sort(key=lambda job: job[0] != "resnet18")  # the slow ones first, so the pool ends together
    args.work.mkdir(parents=True, exist_ok=True)
    results, pending = [], []
    with ProcessPoolExecutor(args.workers) as pool:
        for network, recipe, seed in jobs:
            out = args.work / f"{network}-{recipe}-seed-{seed}-steps-{args.steps}.json"
            if out.is_file():
                results.append(json.loads(out.read_text()))
                continue
            pending.append(pool.submit(run_candidate, args.store, network, recipe, seed, args.steps, args.budget,
                                       str(out)))
        for future in as_completed(pending):
            result = future.result()
            results.append(result)
            print(f"{result['network']:<14} {result['recipe']:<16} seed {result['seed']}: macro-F1 "
                  f"{result['macro_f1']:.3f} ({result['train_seconds']:.0f} s)", flush=True)
    summary = {}
    for network, recipe in candidates:
        runs = [r for r in results if r["network"] == network and r["recipe"] == recipe]
        summary[f"{network} / {recipe}"] = {
            "macro_f1_mean": float(np.mean([r["macro_f1"] for r in runs])),
            "macro_f1_sd": float(np.std([r["macro_f1"] for r in runs], ddof=1)) if len(runs) > 1 else None,
            "balanced_accuracy_mean": float(np.mean([r["balanced_accuracy"] for r in runs])),
            "train_seconds_mean": float(np.mean([r["train_seconds"] for r in runs])), "seeds": len(runs)}
    fast, slow = summary[f"{NETWORKS[0]} / none"], summary[f"{NETWORKS[1]} / none"]
    recipes = {r: summary[f"{NETWORKS[0]} / {r}"]["macro_f1_mean"] for r in RECIPES}
    balanced = {r: summary[f"{NETWORKS[0]} / {r}"]["balanced_accuracy_mean"] for r in RECIPES}
    record = {"benchmark": "classifier and classic-recipe choice on training-side data (CRC fold 0, 10% budget)",
              "store": os.path.relpath(args.store, REPO), "steps": args.steps, "budget": args.budget,
              "seeds": args.seeds, "summary": summary,
              "speed_ratio_resnet18_over_fast": slow["train_seconds_mean"] / fast["train_seconds_mean"],
              "macro_f1_fast_minus_resnet18": fast["macro_f1_mean"] - slow["macro_f1_mean"],
              "best_recipe": max(recipes, key=recipes.get),
              "best_recipe_by_balanced_accuracy": max(balanced, key=balanced.get),
              "best_augmenting_recipe": max((r for r in RECIPES if r != "none"), key=lambda r: recipes[r] + balanced[r]),
              "runs": sorted(results, key=lambda r: (
                  r["network"], r["recipe"], r["seed"]))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "classifier_choice.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(results, RESULTS / "classifier_choice.png")
    for name, values in summary.items():
        print(f"{name:<32} macro-F1 {values['macro_f1_mean']:.3f} ± {values['macro_f1_sd'] or 0:.3f}, "
              f"{values['train_seconds_mean']:.0f} s/run")
    print(f"resnet18 / fast time ratio {record['speed_ratio_resnet18_over_fast']:.1f}; fast - resnet18 macro-F1 "
          f"{record['macro_f1_fast_minus_resnet18']:+.3f}; best recipe by macro-F1 {record['best_recipe']}, by "
          f"balanced accuracy {record['best_recipe_by_balanced_accuracy']}, best augmenting recipe "
          f"{record['best_augmenting_recipe']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
