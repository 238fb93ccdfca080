"""The evaluation's task graph: which steps each cell runs, what each waits for, and roughly what it costs.

Per cell (fold, draw, budget) the steps are those of ``Evaluation.run_cell``, each a task::

    classifier / colour   (arm, seed) of the arms with no extra patches: no dependencies, they start at once
    pseudo-labels (seed)  <- classifier (classic, seed): the pool patches it labels confidently
    gan                   <- classifier (reference arm, first seed), which labels the pool the GAN also
                             learns from (or the ready synthetic store of the cell, taken as it is)
    sampling              <- gan: synthetic patches drawn, selected and measured (fidelity) with the
                             reference classifier as scorer and feature network
    classifier (arm, seed) of the arms with extra patches <- sampling and / or pseudo-labels (seed)

Kept free of torch (``--dry-run`` prints the plan without importing it); ``bioaug.evaluate.distributed`` runs
the graph on Dask.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..store import PatchStore
from .arms import ARMS, REFERENCE_ARMS
from .config import EvaluateConfig
from .splits import Splits

#: Task kinds, in the order the plan prints them.
KINDS = ("classifier", "colour", "pseudo-labels", "gan", "sampling")

# Rough costs on one CPU core, measured on this project's 2-core machine (torch 2.13, one thread):
#: resnet10-w0.5 on 32 px patches without augmentation: 400 steps of batch 64 in 27.8 s
#: (benchmarks/results/classifier_choice.json), per image of a training step.
CLASSIFIER_SECONDS_PER_IMAGE = 27.8 / (400 * 64)
#: The classic recipe (geometric+stain) took 54.8 s for the same steps: its augmentation costs as much again.
CLASSIC_RECIPE_FACTOR = 54.8 / 27.8
#: Networks measured against resnet10-w0.5 (resnet18: 153.1 s for 400 steps); others are assumed to cost as much.
NETWORK_FACTORS = {"resnet18": 153.1 / 27.8}
#: A prediction (pool labelling, test set) is a forward pass: about a third of a training image's forward and
#: backward pass (the usual ratio, not measured).
PREDICTION_FACTOR = 1 / 3
#: The GAN trainer with differentiable augmentation at 32 px: 72.7 real images per second
#: (benchmarks/results/gan_throughput.json); at 64 px 17.2, so the cost grows with the pixels.
GAN_SECONDS_PER_IMAGE = 1 / 72.7


@dataclass(frozen=True)
class Task:
    """One step of one cell: a classifier (arm, seed), the pseudo-labels of a seed, the cell's GAN or its
    synthetic patches."""

    kind: str
    cell: int
    """Index of the cell in the evaluation's plan."""
    arm: str | None = None
    seed: int | None = None
    needs: tuple[str, ...] = ()
    """Names of the tasks whose results this one reads."""

    @property
    def name(self) -> str:
        parts = [self.kind, f"cell-{self.cell}"] + ([self.arm] if self.arm else []) + (
            [f"seed-{self.seed}"] if self.seed is not None else [])
        return "-".join(parts)


def resources(task: Task, config: EvaluateConfig) -> dict[str, int] | None:
    """The Dask worker resources ``task`` asks for: a GPU (``GPU=1``) when it runs torch and ``device`` is
    cuda; nothing otherwise, so CPU-only clusters (and ``auto``, which takes a GPU where a worker has one) need
    no resources."""
    return {"GPU": 1} if config.device == "cuda" and task.kind != "colour" else None


def cell_keys(splits: Splits, config: EvaluateConfig) -> list[tuple[int, int, float]]:
    """(fold, draw, budget) of every cell the evaluation runs, in order."""
    return [(fold, draw, budget)
            for fold, draw, budget in itertools.product(config.fold_indices(), config.budget_draws, config.budgets)
            # a budget that labels every training group is the same cell in every draw: run it in the first
            if draw == config.budget_draws[0] or splits.budget_groups(fold, draw, budget) != splits.orders[fold][draw]]


def reference_arm(config: EvaluateConfig) -> str:
    """The arm whose first-seed classifier scores synthetic patches: classic, else real (trained if not run)."""
    return next(arm for arm in REFERENCE_ARMS if arm in config.arms or arm == "real")


def _classifier(cell: int, arm: str, seed: int, needs: tuple[str, ...] = ()) -> Task:
    return Task("classifier" if ARMS[arm].network else "colour", cell, arm, seed, needs)


def cell_tasks(config: EvaluateConfig, cell: int) -> list[Task]:
    """The tasks of one cell, each after those it needs."""
    plain = [arm for arm in config.arms if not ARMS[arm].sources]
    tasks = [_classifier(cell, arm, seed) for seed in config.seeds for arm in plain]
    sampling = None
    if config.uses_generator():
        reference = reference_arm(config)
        gan = Task("gan", cell, needs=(_classifier(cell, reference, config.seeds[0]).name,)
                   if reference in config.arms else ())  # else the gan task trains the reference itself
        sampling = Task("sampling", cell, needs=(gan.name,))
        tasks += [gan, sampling]
    pseudo = {}
    if any(ARMS[arm].needs_pool for arm in config.arms):
        pseudo = {seed: Task("pseudo-labels", cell, seed=seed, needs=(_classifier(cell, "classic", seed).name,))
                  for seed in config.seeds}
        tasks += pseudo.values()
    for seed, arm in itertools.product(config.seeds, [arm for arm in config.arms if arm not in plain]):
        needs = ((sampling.name,) if ARMS[arm].needs_generator and sampling else ()) + (
            (pseudo[seed].name,) if ARMS[arm].needs_pool else ())
        tasks.append(_classifier(cell, arm, seed, needs))
    return tasks


def planned_cells(config: EvaluateConfig) -> int:
    """How many cells the evaluation runs, without reading its splits: every (fold, draw, budget), a full budget
    once per fold (``cell_keys`` also merges a smaller budget that labels every training group, rare)."""
    partial = sum(budget < 1 for budget in config.budgets)
    return len(config.fold_indices()) * (len(config.budget_draws) * partial + len(config.budgets) - partial)


def plan_lines(store: PatchStore, config: EvaluateConfig) -> list[str]:
    """The plan in words: tasks of each kind over the cells and a rough time of one CPU core for each.

    The estimates come from the measured constants above, scaled by steps, batch and pixels; a GPU is many
    times faster. Colour baselines, sampling and test-set predictions are "small" (seconds to minutes beside
    training, not estimated).
    """
    cells = planned_cells(config)
    tasks = cell_tasks(config, 0)
    counts = {kind: cells * sum(task.kind == kind for task in tasks) for kind in KINDS}
    classifier = config.classifier.for_patches(store.patch_size, store.mpp, store.path)
    pixels = (classifier.view / 32) ** 2
    network = NETWORK_FACTORS.get(classifier.network, 1.0) * pixels
    steps = sum(config.steps_for(budget) for budget in config.budgets) / len(config.budgets)
    per_classifier = steps * classifier.batch_size * CLASSIFIER_SECONDS_PER_IMAGE * network
    classic = sum(ARMS[task.arm].classic for task in tasks if task.kind == "classifier")
    plain = sum(task.kind == "classifier" for task in tasks) - classic
    pool = len(PatchStore(config.unlabelled)) * (1 - 1 / config.folds) if config.unlabelled else 0
    gan_seconds = 0.0
    if counts["gan"]:
        gan = config.generator.resolve(store.patch_size)
        gan_seconds = gan.steps * gan.batch_size * GAN_SECONDS_PER_IMAGE * (store.patch_size / 32) ** 2
        if gan.time_budget:
            gan_seconds = min(gan_seconds, gan.time_budget)
    seconds = {"classifier": cells * per_classifier * (plain + classic * CLASSIC_RECIPE_FACTOR),
               "pseudo-labels": counts["pseudo-labels"] * pool * CLASSIFIER_SECONDS_PER_IMAGE * network
               * PREDICTION_FACTOR,
               "gan": counts["gan"] * gan_seconds}
    lines = [f"plan: {cells} cell(s), {sum(counts.values())} tasks; rough time on one CPU core "
             "(constants in bioaug/evaluate/graph.py; a GPU is many times faster):"]
    for kind in KINDS:
        if counts[kind]:
            estimate = _duration(seconds[kind]) if kind in seconds else "small"
            lines.append(f"  {kind:<14} {counts[kind]:>5} tasks  {estimate:>9}")
    lines.append(f"  {'total':<14} {sum(counts.values()):>5} tasks  {_duration(sum(seconds.values())):>9}")
    return lines


def _duration(seconds: float) -> str:
    """``seconds`` as a short rough duration: 40 s, 12 min, 3.5 h."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
