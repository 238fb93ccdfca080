"""``EvaluateConfig``: every option of ``bioaug evaluate``, checked before any training starts.

The evaluation drives three other stages and holds each one's whole config as a nested section, so a profile
reaches every option of them: ``classifier`` (``ClassifierConfig``), ``generator`` (the GAN's ``TrainConfig``)
and ``augment`` (``AugmentConfig``: how synthetic patches are drawn and selected). Kept free of torch and
scikit-learn so the command line can build ``--help`` and ``--dry-run`` quickly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..classify.recipes import RECIPES
from ..classify.config import ClassifierConfig
from ..config import build_section, check_choices, flag, option, section_errors
from ..devices import DEVICES
from ..errors import ConfigError
from ..gan.config import TrainConfig
from ..augment.config import AugmentConfig
from .arms import ARMS
from .splits import DRAW_POLICIES


@dataclass
class EvaluateConfig:
    """The evaluation protocol: splits, label budgets, arms, seeds, unlabelled pool and the stages it drives."""

    folds: int = option(5, "grouped cross-validation folds, assigned from the group names and split_seed alone")
    run_folds: list[int] = option([], "indices of the folds to run (empty: all folds)")
    split_seed: int = option(0, "seed of the fold assignment, the budget draws and the generators")
    group_by: str = option("slide", "manifest column naming the groups kept on one side of every split "
                                    "(slide, or e.g. patient)")
    splits: str | None = option(None, "split file (splits.json): folds and budget draws are read from it when it "
                                      "exists and written to it when not, so every evaluation naming it, on any "
                                      "store of the same slides, uses the same ones (default: made anew and "
                                      "saved as REPORT_DIR/splits.json)")
    budgets: list[float] = option([0.1, 0.25, 1.0], "label budgets: fractions of each fold's training groups "
                                                    "(nested: smaller budgets' groups are among larger ones')")
    budget_draws: list[int] = option([0], "budget draws: each is its own seeded order of a fold's training "
                                          "groups, labelled first to last (an axis of its own, not the "
                                          "classifier seed)")
    draw_policy: str = option("random", "how a draw orders the groups: random, or every_class (groups bringing a "
                                        "class not yet covered first, so small budgets hold every class)",
                              choices=DRAW_POLICIES)
    budget_steps: list[int] = option([], "classifier steps per budget, one per entry of budgets (empty: "
                                         "classifier steps for all); every arm of a budget trains the same steps")
    seeds: list[int] = option([0, 1, 2, 3, 4], "classifier seeds; every arm runs every seed on the same splits")
    arms: list[str] = option(["real", "classic", "classic+synthetic", "classic+selected", "colour"],
                             "arms to compare (add pseudo_label with an unlabelled store)", choices=ARMS)
    classic_recipe: str = option("geometric+stain", "augmentation recipe of the classic arms (chosen on "
                                                    "training-side data by benchmarks/classifier_choice.py)",
                                 choices=RECIPES)
    synthetic_fraction: float = option(0.5, "share of every training batch filled with synthetic or "
                                            "pseudo-labelled patches in the arms that use them")
    unlabelled: str | None = option(None, "unlabelled patch store of the same slides (`bioaug tile --label-by "
                                          "none`): its nuclei on each fold's training slides outside the label "
                                          "budget form the pool for pseudo-labels and generators")
    pseudo_label_threshold: float = option(0.9, "pool patches whose classic-classifier confidence reaches this "
                                                "join training (pseudo_label arm) and the generator's data")
    generator_pool: bool = option(True, "train each cell's generator on the budget's patches plus the "
                                        "confidently pseudo-labelled pool (needs unlabelled)")
    validation_fraction: float = option(0.2, "fraction of training groups held out for early stopping (only "
                                             "with classifier patience > 0)")
    synthetic: dict[str, str] = option({}, "ready synthetic stores per cell, FOLD-BUDGET -> store (e.g. "
                                           "'0-0.1': path); those cells train no generator")
    external: dict[str, str] = option({}, "external test stores, NAME -> store: every classifier is also tested "
                                          "on each; never used for training, selection, pseudo-labels or "
                                          "generators")
    external_classes: dict[str, str] = option({}, "external class name -> training class name, for external "
                                                  "stores that name their classes otherwise")
    device: str = option("auto", "where to train: CUDA (with mixed precision) when present with auto",
                         choices=DEVICES)
    scheduler: str | None = option(None, "run the cells' tasks on Dask: a dask.distributed scheduler address "
                                         "(tcp://host:8786), or local:N for a local cluster of N worker processes")
    task_threads: int = option(1, "torch threads of each Dask task (with scheduler)")
    classifier: ClassifierConfig = option(ClassifierConfig(), "the classifier every network arm trains "
                                                              "(its seed and augmentation are set per arm)")
    generator: TrainConfig = option(TrainConfig(steps=5000), "the GAN trained per fold and budget")
    augment: AugmentConfig = option(AugmentConfig(per_class=400, sheets=False), "how synthetic patches are "
                                    "drawn and selected per cell (per_class, truncation, min_confidence, ...)")

    def __post_init__(self) -> None:
        """Sections given as mappings (``classifier={"steps": 800}``) become their configs, checked."""
        for name in ("classifier", "generator", "augment"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, build_section(type(self), name, value))

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the option's flag for any value no evaluation could use, including
        missing stores."""
        check_choices(self)
        if self.folds < 2:
            raise ConfigError(flag("folds"), f"need at least 2 folds, got {self.folds}")
        bad_folds = [k for k in self.run_folds if not 0 <= k < self.folds]
        if bad_folds:
            raise ConfigError(flag("run_folds"), f"fold {bad_folds[0]} is not in 0..{self.folds - 1}")
        for name in ("budgets", "seeds", "arms", "budget_draws"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ConfigError(flag(name), f"need at least one value and no repeats, got {values}")
        bad_budgets = [b for b in self.budgets if not 0 < b <= 1]
        if bad_budgets:
            raise ConfigError(flag("budgets"), f"a label budget is a fraction of training slides in (0, 1], "
                                               f"got {bad_budgets[0]}")
        if any(draw < 0 for draw in self.budget_draws):
            raise ConfigError(flag("budget_draws"), f"draws are numbered from 0, got {self.budget_draws}")
        if self.budget_steps and (len(self.budget_steps) != len(self.budgets) or min(self.budget_steps) < 1):
            raise ConfigError(flag("budget_steps"), f"need one positive step count per budget ({len(self.budgets)} "
                                                    f"budgets), got {self.budget_steps}")
        for name in ("synthetic_fraction", "pseudo_label_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(flag(name), f"must lie in [0, 1], got {getattr(self, name)}")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(flag("validation_fraction"), f"must be in (0, 1), got {self.validation_fraction}")
        if self.scheduler is not None and not self.scheduler.strip():
            raise ConfigError(flag("scheduler"), "must not be empty")
        if self.task_threads < 1:
            raise ConfigError(flag("task_threads"), f"need at least 1 thread per task, got {self.task_threads}")
        for name in ("classifier", "generator", "augment"):
            with section_errors(name):
                getattr(self, name).validate()
        for option_name, value, default, instead in (
                ("classifier.seed", self.classifier.seed, 0, "seeds"),
                ("generator.seed", self.generator.seed, 0, "split_seed"),
                ("augment.seed", self.augment.seed, 0, "split_seed"),
                ("generator.device", self.generator.device, "auto", "device"),
                ("augment.device", self.augment.device, "auto", "device")):
            if value != default:
                raise ConfigError(flag(option_name), f"is set by the evaluation (from {instead}); set {instead} "
                                                     f"instead of {value!r}")
        needs_pool = [arm for arm in self.arms if ARMS[arm].needs_pool]
        if needs_pool and not self.unlabelled:
            raise ConfigError(flag("unlabelled"), f"arm {needs_pool[0]!r} needs an unlabelled store (unlabelled: "
                                                  "STORE, from `bioaug tile --label-by none` on the same slides)")
        if self.unlabelled and not (Path(self.unlabelled) / "store.json").is_file():
            raise ConfigError(flag("unlabelled"), f"no patch store at {self.unlabelled}")
        for name, path in self.external.items():
            if not (Path(path) / "store.json").is_file():
                raise ConfigError(f"external {name}", f"no patch store at {path}")
        for key, path in self.synthetic.items():
            fold, budget, draw = synthetic_key(key)
            if fold not in self.fold_indices() or budget not in self.budgets or draw not in self.budget_draws:
                raise ConfigError(f"synthetic {key}", f"names no evaluated cell (folds {self.fold_indices()}, "
                                                      f"budgets {self.budgets}, draws {self.budget_draws})")
            if not (Path(path) / "store.json").is_file():
                raise ConfigError(f"synthetic {key}", f"no patch store at {path}")

    def fold_indices(self) -> list[int]:
        """The folds this evaluation runs."""
        return list(self.run_folds) or list(range(self.folds))

    def uses_generator(self) -> bool:
        """Whether any arm trains on generated patches."""
        return any(ARMS[arm].needs_generator for arm in self.arms)

    def ready_synthetic(self, fold: int, budget: float, draw: int) -> Path | None:
        """The ready synthetic store given for (fold, budget, draw), if any."""
        for key, path in self.synthetic.items():
            if synthetic_key(key) == (fold, budget, draw):
                return Path(path)
        return None

    def steps_for(self, budget: float) -> int:
        """Classifier steps of every arm at ``budget``."""
        return self.budget_steps[self.budgets.index(budget)] if self.budget_steps else self.classifier.steps


def synthetic_key(key: str) -> tuple[int, float, int]:
    """(fold, budget, draw) from a ``synthetic`` key: ``"0-0.1"`` (draw 0) or ``"0-0.1-2"`` (draw 2)."""
    parts = str(key).split("-")
    try:
        if len(parts) not in (2, 3):
            raise ValueError(key)
        return int(parts[0]), float(parts[1]), int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise ConfigError(f"synthetic {key}", "keys are FOLD-BUDGET or FOLD-BUDGET-DRAW, e.g. 0-0.1") from None
