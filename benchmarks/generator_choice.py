"""Choosing the generator by fidelity at equal training time, not by step count.

Every variant (a generator preset, with or without the unlabelled rows, with or without LeCam) trains for the
same budget (``TrainConfig.time_budget``, in wall or CPU seconds) on the same store with the same number of
threads, one after the other or ``--jobs`` at a time. Then each is judged in one feature space, the
penultimate layer of a classifier trained on the real labelled patches (the augment stage's selection
classifier, so "kept by selection" means what it means in ``bioaug augment --select``):

- Fréchet distance, KID, precision/recall and two-sample accuracy (``bioaug.evaluate.fidelity``) between the
  real patches and as many samples, class for class;
- per-class diversity relative to the real patches (``bioaug.gan.diversity``);
- how many samples of each class selection keeps;
- a sheet of sample grids side by side, one row per class (generated samples only: the sheet may be committed,
  and the real patches are research-only; each run's ``reals.png`` shows them where they were trained on).

Writes ``results.json``, ``results.md`` and ``generator_choice.png`` under ``--out``; the runs and the cached
classifier go under ``--work`` (rerunning reuses finished runs: their budget is spent). For example, the
fold-0, 10% cell with its unlabelled pool, 30 CPU minutes per variant, four variants side by side::

    python benchmarks/generator_choice.py --store crc-eval/work/fold-0/draw-0/budget-0.10/gan-store \\
        --unlabelled crc-eval/work/fold-0/draw-0/budget-0.10/pool-store --reference fold-0-training-images-store \\
        --presets plain resnet --unlabelled-modes ignore discriminator --budget-s 1800 --budget-clock cpu \\
        --threads 1 --jobs 4

(With a cell's pseudo-labelled generator store as ``--store``, ``ignore`` is "pseudo-labels alone" and
``discriminator`` adds the rest of the pool, the patches not confidently pseudo-labelled, as unlabelled rows.)

Or let an evaluation profile build the cell, exactly as ``bioaug evaluate`` does (its fixed splits, its
budget draw, its classic classifier pseudo-labelling the pool), in that evaluation's work directory so that the
evaluation reuses it: ``--cell PROFILE --labelled STORE --pool STORE`` trains on the cell's generator store and
judges against the fold's training images. For example the quick profile's fold-0 cell, with named option sets
(``--options``, :data:`OPTION_SETS`) and only the variants named by ``--only``::

    python benchmarks/generator_choice.py --cell pipelines/crc-nuclei-quick.yaml \\
        --labelled ../crc-bench/crc-store --pool ../crc-bench/crc-pool \\
        --cell-work ../crc-bench/evaluation-crc-nuclei-quick/work --presets plain fastgan \\
        --unlabelled-modes ignore --lecam 0.3 --options default d1 --only plain+lecam0.3 fastgan+lecam0.3 \\
        plain+lecam0.3+d1 --budget-s 1800 --budget-clock cpu --threads 1 --jobs 2

A tiny smoke run (tests/test_gan_choice.py does this on a generated store)::

    python benchmarks/generator_choice.py --store STORE --budget-s 2 --classifier-steps 5 \\
        --samples-per-class 8 --set channels=8 max_channels=32 batch_size=12 z_dim=16
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "generator_choice"
GRID_COLUMNS = 8
TITLE_HEIGHT = 16


#: Named sets of further TrainConfig options a variant may train with (``--options``): the throughput options of
#: benchmarks/gan_throughput.py, judged here at equal CPU time (a faster step only pays if quality holds).
OPTION_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "d1": {"d_steps": 1},
    "bf16-d1": {"precision": "bf16", "d_steps": 1},  # on a CPU with bf16 kernels (AVX512-BF16/AMX) only
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One generator configuration under comparison."""

    preset: str
    unlabelled: str
    lecam: float
    options: str = "default"

    @property
    def name(self) -> str:
        parts = [self.preset]
        if self.unlabelled != "ignore":
            parts.append("unlabelled")
        if self.lecam:
            parts.append(f"lecam{self.lecam:g}")
        if self.options != "default":
            parts.append(self.options)
        return "+".join(parts)


def chosen_variants(args: argparse.Namespace, modes: list[str]) -> list[Variant]:
    """Every combination of presets, unlabelled modes, LeCam weights and option sets, or those ``--only`` names
    (in the order given there); an unknown name is an error listing the combinations."""
    variants = [Variant(*combination) for combination in
                itertools.product(args.presets, modes, args.lecam, args.options)]
    if not args.only:
        return variants
    by_name = {variant.name: variant for variant in variants}
    unknown = [name for name in args.only if name not in by_name]
    if unknown:
        raise SystemExit(f"--only: no variant {', '.join(unknown)} among {', '.join(by_name)}")
    return [by_name[name] for name in args.only]


def cell_stores(args: argparse.Namespace, work: Path):
    """The generator store of one cell of an evaluation profile and a store of its fold's training images.

    The cell is planned and its generator store written by the evaluation itself (``cell_generator_store``:
    the fold's classic classifier with the profile's first seed, its confident pseudo-labels of the pool), in
    ``--cell-work``, so a later ``bioaug evaluate`` of the same profile there reuses them. The judge trains on
    every training image of the fold (the test images stay unread), as in the earlier editions.
    """
    from bioaug.config import build_config, load_config_file
    from bioaug.errors import ConfigError
    from bioaug.evaluate.config import EvaluateConfig
    from bioaug.evaluate.protocol import cell_generator_store
    from bioaug.store import PatchStore, subset_store

    values = load_config_file(args.cell)
    values["unlabelled"] = str(args.pool)
    config = build_config(EvaluateConfig, values, source=args.cell)
    labelled = PatchStore(args.labelled)
    try:
        cell, gan_store = cell_generator_store(labelled, config, args.cell_work or work / "evaluation" / "work",
                                               fold=args.fold, draw=args.draw, budget=args.budget,
                                               progress=not args.quiet)
    except ConfigError as error:
        raise SystemExit(f"{args.cell}: {error}") from None
    rows = np.flatnonzero([str(slide) not in cell.test_slides for slide in labelled.slides])
    reference = subset_store(labelled, rows, work / f"fold-{cell.fold}-training-images", provenance={
        "made_by": "benchmarks/generator_choice.py", "fold": cell.fold, "role": "judge reference"})
    return gan_store, reference


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs for TrainConfig, values parsed as YAML scalars (``8``, ``0.5``, ``true``)."""
    import yaml

    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected key=value")
        values[key.replace("-", "_")] = yaml.safe_load(value)
    return values


def training_store(store, unlabelled, work: Path):
    """The store the generators train on, and how many unlabelled rows it gained: ``store`` alone, or with the
    rows of ``unlabelled`` it does not already hold (same pixels) as label -1.

    A cell's generator store already holds the pool's confidently pseudo-labelled patches; leaving those out
    here gives the store ``bioaug evaluate`` builds with ``generator.unlabelled=discriminator``.
    """
    if unlabelled is None:
        return store, 0
    from bioaug.evaluate.pool import write_labelled_union

    held = {patch.tobytes() for patch in store.images(np.arange(len(store)))}
    rows = np.array([row for row, patch in enumerate(unlabelled.images(np.arange(len(unlabelled))))
                     if patch.tobytes() not in held], dtype=np.int64)
    union = write_labelled_union(store, unlabelled, rows, np.full(len(rows), -1), work / "train-store",
                                 provenance={"made_by": "benchmarks/generator_choice.py"})
    return union, len(rows)


def train_variant(variant: Variant, store, work: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Train one variant for the budget; return its run and what the training did."""
    import torch

    from bioaug.config import build_config
    from bioaug.gan import TrainConfig, train
    from bioaug.gan.run import RunDirectory

    torch.set_num_threads(args.threads)  # again: a worker process starts with torch's default

    values = {"steps": 10 ** 9, "snapshot_every": 10 ** 9, "checkpoint_every": 500, "log_every": 25,
              "device": args.device, "seed": args.seed, **_overrides(args.set), **OPTION_SETS[variant.options],
              "preset": variant.preset, "unlabelled": variant.unlabelled, "lecam": variant.lecam,
              "time_budget": args.budget_s, "budget_clock": args.budget_clock}
    config = build_config(TrainConfig, values, source="--set")
    cpu_before = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    wall_before = time.perf_counter()
    run = train(store, work / "runs" / variant.name, config, progress=not (args.quiet or args.jobs > 1))
    run_dir = RunDirectory(run)
    state, lines = run_dir.load_checkpoint(), run_dir.read_log()
    rates = [line["images_per_s"] for line in lines if "images_per_s" in line]
    return run, {"steps": int(state["step"]), "train_seconds": round(float(state["train_seconds"]), 1),
                 "this_call_wall_s": round(time.perf_counter() - wall_before, 1),
                 "this_call_cpu_s": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu_before, 1),
                 "images_per_s_median": float(np.median(rates)) if rates else None,
                 "config": state["config"]}


def train_all(variants: list[Variant], store, work: Path, args: argparse.Namespace) -> list[tuple]:
    """Train every variant, ``args.jobs`` at a time; (variant, run, training record) in variant order."""
    if args.jobs == 1:
        trained = []
        for variant in variants:
            print(f"training {variant.name} for {args.budget_s:g} {args.budget_clock} s", file=sys.stderr)
            trained.append((variant, *train_variant(variant, store, work, args)))
        return trained
    from concurrent.futures import ProcessPoolExecutor

    print(f"training {len(variants)} variants, {args.jobs} at a time, for {args.budget_s:g} {args.budget_clock} "
          f"s each (logs: {work / 'runs'}/*/log.jsonl)", file=sys.stderr)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(train_variant, variant, store.path, work, args) for variant in variants]
        trained = []
        for variant, future in zip(variants, futures):
            trained.append((variant, *future.result()))
            print(f"trained {variant.name}: {trained[-1][2]['steps']} steps", file=sys.stderr)
    return trained


def real_sample(reference, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` labelled rows of each class of ``reference`` (seeded), and their labels."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(reference.labels == k))[:per_class]
            for k in range(len(reference.class_names))]
    rows = np.sort(np.concatenate(rows))
    return rows, reference.labels[rows]


def judges(reference, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """What every variant is judged by: the feature classifier trained on ``reference`` (cached under
    ``work``), a seeded class-balanced sample of its real patches, their features, per-class diversity and the
    selection's class reference."""
    from bioaug.gan.diversity import pairwise_diversity
    from bioaug.augment import AugmentConfig
    from bioaug.augment.selection import ClassReference, train_scorer

    augment_config = AugmentConfig(per_class=1, classifier_steps=args.classifier_steps, seed=args.seed,
                                   min_confidence=args.min_confidence, device=args.device)
    scorer, classifier = train_scorer(reference, augment_config, device=args.device, cache=work / "scorers")
    rows, labels = real_sample(reference, args.samples_per_class, args.seed)
    images = reference.images(rows)
    _, features = scorer(images)
    names = reference.class_names
    return {"scorer": scorer, "classifier": classifier, "labels": labels, "names": names, "features": features,
            "diversity": [pairwise_diversity(images[labels == k]) for k in range(len(names))],
            "reference": ClassReference.fit(features, labels, len(names), augment_config.feature_quantile)}


def judge_images(images: np.ndarray, real: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Fidelity, per-class diversity and selection counts of samples drawn class for class with the reals."""
    from bioaug.evaluate.fidelity import fidelity_metrics
    from bioaug.gan.diversity import diversity_ratios
    from bioaug.augment.selection import judge

    labels, names = real["labels"], real["names"]
    probabilities, features = real["scorer"](images)
    metrics = fidelity_metrics(real["features"], features, seed=args.seed)
    fakes = [images[labels == k] for k in range(len(names))]
    diversity = diversity_ratios(fakes, real["diversity"])
    verdict = judge(probabilities, features, labels, real["reference"], args.min_confidence)
    kept = {name: int(verdict["kept"][labels == k].sum()) for k, name in enumerate(names)}
    return {"fidelity": metrics, "diversity": dict(zip(names, map(_rounded, diversity))),
            "selection_kept": kept, "selection_of": {name: int((labels == k).sum()) for k, name in enumerate(names)},
            "grid_rows": [fake[:GRID_COLUMNS] for fake in fakes]}


def judge_variant(run: Path, real: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """:func:`judge_images` of a run's samples, drawn as ``bioaug augment`` draws them."""
    from bioaug.augment import Synthesizer

    synth = Synthesizer.from_checkpoint(run, device=args.device)
    return judge_images(synth.sample(real["labels"], seed=args.seed), real, args)


def _rounded(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 4)


def side_by_side(panels: list[tuple[str, list[np.ndarray]]], names: list[str]):
    """One PNG-ready image: each panel's class grid under its title, left to right."""
    from PIL import Image, ImageDraw

    from bioaug.gan.grids import class_grid

    grids = [(title, class_grid(rows, names, GRID_COLUMNS)) for title, rows in panels]
    width = sum(grid.width for _, grid in grids) + 8 * (len(grids) - 1)
    height = max(grid.height for _, grid in grids) + TITLE_HEIGHT
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    left = 0
    for title, grid in grids:
        draw.text((left + 4, 2), title, fill=(0, 0, 0))
        sheet.paste(grid, (left, TITLE_HEIGHT))
        left += grid.width + 8
    return sheet


def markdown(results: dict[str, Any]) -> str:
    names = results["class_names"]
    clock = results.get("budget_clock", "wall")
    lines = [f"# Generator choice at {results['budget_s']:g} {clock} s of training per variant", "",
             f"Store `{results['store']}` ({results['unlabelled_rows']} unlabelled rows added), feature network "
             f"`{results['classifier']['network']}` ({results['classifier']['steps']} steps, sha256 "
             f"{results['classifier']['sha256'][:12]}), {results['n_real']} real patches and as many samples.", "",
             "| variant | steps | images/s | Fréchet | KID | precision | recall | two-sample acc. | "
             + " | ".join(f"diversity {n}" for n in names) + " | " + " | ".join(f"kept {n}" for n in names) + " |",
             "|" + "---|" * (8 + 2 * len(names))]
    for row in results["variants"]:
        f = row["fidelity"]
        lines.append(f"| {row['name']} | {row['training']['steps']} | {row['training']['images_per_s_median']} | "
                     f"{f['frechet_distance']:.2f} | {f['kid']:.4f} | {f['precision']:.3f} | {f['recall']:.3f} | "
                     f"{f['two_sample_accuracy']:.3f} | "
                     + " | ".join(str(row["diversity"][n]) for n in names) + " | "
                     + " | ".join(f"{row['selection_kept'][n]}/{row['selection_of'][n]}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="labelled training store of the generators (or --cell)")
    parser.add_argument("--cell", type=Path, help="evaluation profile whose cell (--fold, --draw, --budget) gives "
                                                  "the training store and the judge's reference")
    parser.add_argument("--labelled", type=Path, help="with --cell: the evaluation's labelled store")
    parser.add_argument("--pool", type=Path, help="with --cell: the evaluation's unlabelled store")
    parser.add_argument("--cell-work", type=Path, help="with --cell: the evaluation's work directory (default: "
                                                       "WORK/evaluation/work)")
    parser.add_argument("--fold", type=int, default=0, help="with --cell: the cell's fold")
    parser.add_argument("--draw", type=int, default=0, help="with --cell: the cell's budget draw")
    parser.add_argument("--budget", type=float, default=0.1, help="with --cell: the cell's budget")
    parser.add_argument("--unlabelled", help="store of unlabelled patches (e.g. `bioaug tile --label-by none`) "
                                             "added to the training store with label -1")
    parser.add_argument("--reference", help="store of the real patches the samples are judged against and the "
                                            "feature classifier trains on (default: --store)")
    parser.add_argument("--presets", nargs="+", default=["plain", "resnet"])
    parser.add_argument("--unlabelled-modes", nargs="+", default=["ignore", "discriminator"],
                        help="TrainConfig.unlabelled values to compare (only 'ignore' when neither --store "
                             "nor --unlabelled has unlabelled rows)")
    parser.add_argument("--lecam", type=float, nargs="+", default=[0.0], help="LeCam weights to compare")
    parser.add_argument("--options", nargs="+", choices=OPTION_SETS, default=["default"],
                        help="named TrainConfig option sets to compare (see OPTION_SETS)")
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="train and judge only these combinations, "
                                                                     "by name (e.g. plain+lecam0.3)")
    parser.add_argument("--budget-s", type=float, required=True, help="training seconds per variant")
    parser.add_argument("--budget-clock", default="wall", choices=("wall", "cpu"),
                        help="what the budget counts (TrainConfig.budget_clock): cpu seconds stay fair when "
                             "variants train side by side or the machine is busy")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and judging")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at the same time, each in its own "
                                                             "process with --threads threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="further TrainConfig options")
    parser.add_argument("--samples-per-class", type=int, default=500, help="real patches (and samples) per class")
    parser.add_argument("--classifier-steps", type=int, default=400, help="steps of the feature classifier")
    parser.add_argument("--min-confidence", type=float, default=0.8, help="selection threshold (as augment)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, help="runs and cached classifier (default: OUT/work)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from bioaug.store import PatchStore, check_compatible

    torch.set_num_threads(args.threads)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if (args.store is None) == (args.cell is None):
        parser.error("give --store or --cell")
    chosen_variants(args, args.unlabelled_modes)  # an unknown --only name fails before any store is built
    if args.cell is not None:
        if args.labelled is None or args.pool is None or args.unlabelled or args.reference:
            parser.error("--cell takes --labelled and --pool (and neither --unlabelled nor --reference)")
        store, reference = cell_stores(args, work)
    else:
        store = PatchStore(args.store)
        reference = PatchStore(args.reference) if args.reference else store
    pool = PatchStore(args.unlabelled) if args.unlabelled else None
    check_compatible(reference, store)  # judged by the reference's classes, so they must be the generators'
    has_unlabelled = pool is not None or bool((store.labels < 0).any())
    modes = args.unlabelled_modes if has_unlabelled else ["ignore"]
    variants = chosen_variants(args, modes)
    train_on, unlabelled_rows = training_store(store, pool, work)
    trained = train_all(variants, train_on, work, args)

    real = judges(reference, args, work)
    names = real["names"]

    results: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "store": str(store.path), "store_sha256": store.content_hash,
        "unlabelled_store": str(pool.path) if pool else None, "unlabelled_rows": unlabelled_rows,
        "cell": {"profile": str(args.cell), "fold": args.fold, "draw": args.draw, "budget": args.budget}
        if args.cell else None,
        "reference": str(reference.path), "budget_s": args.budget_s, "budget_clock": args.budget_clock,
        "threads": args.threads, "jobs": args.jobs,
        "device": args.device, "class_names": names, "n_real": int(len(real["labels"])),
        "classifier": real["classifier"],
        "variants": []}
    # generated samples only: the sheet may be committed, and the real patches' licence forbids copies of them
    panels: list[tuple[str, list]] = []
    for variant, run, training in trained:
        judged = judge_variant(run, real, args)
        panels.append((f"{variant.name} ({training['steps']} steps)", judged.pop("grid_rows")))
        results["variants"].append({"name": variant.name, **dataclasses.asdict(variant), "run": str(run),
                                    "training": training, **judged})
        fidelity = judged["fidelity"]
        print(f"{variant.name}: {training['steps']} steps, Fréchet {fidelity['frechet_distance']:.2f}, "
              f"two-sample accuracy {fidelity['two_sample_accuracy']:.3f}", file=sys.stderr)

    write_outputs(args.out, results, markdown(results), side_by_side(panels, names), "generator_choice.png")
    return 0


def write_outputs(out: Path, results: dict[str, Any], text: str, sheet, png_name: str) -> None:
    """``results.json``, ``results.md`` (``text``, also printed) and the sample sheet ``png_name`` under ``out``."""
    from bioaug.gan.grids import write_png
    from bioaug.provenance import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", results)
    (out / "results.md").write_text(text)
    write_png(sheet, out / png_name)
    print(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
