"""The ``bioaug`` command: a thin layer that parses options, calls the library and prints.

Every stage's options come from its config dataclass (see ``bioaug.config``), so ``--help``, config files and
the library share one set of names and defaults. Bad input of any kind (a ``BioaugError``, a file-system error
on an input or output, a usage error) is printed as one line and exits 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable

from . import __version__
from .config import add_config_arguments, config_to_dict, resolve_config
from .cpus import available_cpus
from .errors import BioaugError, describe_os_error
from .provenance import check_output_dir

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (naming the option) and exit 2, like bad input."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


class _UsageError(Exception):
    """A command line that argparse cannot parse."""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of options (flags override it)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress log lines")


def _print_config(config: object) -> None:
    print(json.dumps(config_to_dict(config), indent=2, sort_keys=True))


def cmd_tile(args: argparse.Namespace) -> int:
    from .tile import TileConfig, tile

    config = resolve_config(TileConfig, args)
    if args.dry_run:
        _print_config(config)
        return 0
    store = tile(args.slides, args.out, config, progress=not args.quiet)
    counts = ", ".join(f"{name} {count}" for name, count in store.header.counts.items()) or "no labels"
    print(f"{args.out}: {len(store)} patches of {store.patch_size} px at {store.mpp:g} µm/px ({counts})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .gan import TrainConfig, train
    from .gan.run import RunDirectory
    from .store import PatchStore

    store = PatchStore(args.store)
    config = resolve_config(TrainConfig, args).resolve(store.patch_size)
    if args.dry_run:
        _print_config(config)
        return 0
    run = train(store, args.out, config, new=args.new, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        run_dir = RunDirectory(run)
        print(f"{run}: checkpoint {run_dir.checkpoint}, sample grids in {run_dir.samples_dir}")
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    from .augment import AugmentConfig

    config = resolve_config(AugmentConfig, args)
    if args.dry_run:
        _print_config(config)
        return 0
    from .augment import augment

    store = augment(args.run, args.out, config, real=args.real, progress=not args.quiet)
    report = json.loads((store.path / "augment.json").read_text())
    for name, counts in report["classes"].items():
        rejected = ", ".join(f"{reason} {count}" for reason, count in counts["rejected"].items())
        print(f"{name}: {counts['kept']} kept of {counts['generated']} generated"
              + (f" (rejected: {rejected})" if rejected else ""))
    copies = report.get("audit", {}).get("near_copies")
    print(f"{args.out}: {len(store)} synthetic patches"
          + (f", {copies} flagged as near-copies of real patches" if copies is not None else ""))
    return 0


def _cell_store(text: str) -> tuple[str, str]:
    """``FOLD-BUDGET[-DRAW]=STORE`` from the command line as a (key, store) pair of ``EvaluateConfig.synthetic``."""
    key, separator, store = text.partition("=")
    if not separator or not store:
        raise argparse.ArgumentTypeError(f"expected FOLD-BUDGET[-DRAW]=STORE (e.g. 0-0.1=synth-store), got {text!r}")
    return key, store


def _named_store(text: str) -> tuple[str, str]:
    """``NAME=STORE`` from the command line as a (name, store) pair of ``EvaluateConfig.external``."""
    name, separator, store = text.partition("=")
    if not separator or not name or not store:
        raise argparse.ArgumentTypeError(f"expected NAME=STORE (e.g. hospital-b=store-b), got {text!r}")
    return name, store


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate.config import EvaluateConfig
    from .store import PatchStore

    store = PatchStore(args.store)
    config = resolve_config(EvaluateConfig, args)  # the (key, store) pairs of --synthetic become its dict
    if args.dry_run:
        from .evaluate.graph import plan_lines

        _print_config(config)
        print("\n".join(plan_lines(store, config)), file=sys.stderr)  # stdout stays the config's JSON
        return 0
    from .evaluate.protocol import run_evaluation

    out = run_evaluation(store, args.out, config, progress=not args.quiet)  # on Dask with --scheduler
    print(f"report: {out / 'report.md'} (also report.json, table.tex and figures in {out})")
    return 0


def cmd_study_make(args: argparse.Namespace) -> int:
    from .study.config import StudyConfig

    config = resolve_config(StudyConfig, args)
    if args.dry_run:
        _print_config(config)
        return 0
    from .study import make, read_key

    page = make(args.real, args.synthetic, args.out, config)
    key = read_key(args.out)
    print(f"{page}: {len(key['items'])} items ({key['counts']['real']} real, {key['counts']['synthetic']} "
          f"synthetic), study {key['study_id']}; the answer key {Path(args.out) / 'key.json'} stays with you")
    return 0


def cmd_study_score(args: argparse.Namespace) -> int:
    from .study import score

    result = score(args.study, args.answers, args.out)
    for name, scores in result["readers"].items():
        accuracy = scores["accuracy"]
        low, high = accuracy["ci95"]
        print(f"{name}: accuracy {accuracy['value']:.2f} [{low:.2f}, {high:.2f}] over {accuracy['n']} answers "
              f"(p = {accuracy['p_value']:.2g} against 0.5)")
    out = Path(args.out or args.study)
    print(f"report: {out / 'score.md'} (also score.json and score.png)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .store import PatchStore

    store = PatchStore(args.store)
    store.verify(progress=not args.quiet)
    print(f"{store.path}: {len(store)} patches verified against their SHA-256 (content hash "
          f"{store.content_hash[:12]})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(Path(args.out), size=args.size, workers=args.workers, progress=not args.quiet)
    print(f"demo finished; report: {report / 'report.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .evaluate.config import EvaluateConfig
    from .gan.config import TrainConfig
    from .gan.run import CHECKPOINT_NAME
    from .study.config import StudyConfig
    from .augment.config import AugmentConfig
    from .tile import TileConfig

    parser = _Parser(prog="bioaug", description="Synthetic histology for small, imbalanced "
                                     "pathology training sets: tile slides, train a conditional GAN, augment, "
                                     "evaluate.")
    parser.add_argument("--version", action="version", version=f"bioaug {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tile = commands.add_parser("tile", help="cut nucleus-centred, labelled patches from slides into a store",
                               description="Open slides (any OpenSlide format, or plain PNG/JPEG/TIFF), find "
                               "tissue and nuclei (or take annotated points), and write nucleus-centred patches "
                               "at a fixed µm/px into a patch store. Reruns resume.")
    tile.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files or directories of them")
    tile.add_argument("--out", required=True, metavar="STORE", help="patch store directory")
    _add_common(tile)
    add_config_arguments(tile, TileConfig)
    tile.set_defaults(handler=cmd_tile)

    train = commands.add_parser("train", help="train a class-conditional GAN on a patch store",
                                description="Train a class-conditional GAN (projection discriminator, hinge "
                                "loss, EMA generator, adaptive differentiable augmentation) on a store's "
                                f"labelled patches. Resumes from RUN/{CHECKPOINT_NAME} unless --new. Runs under "
                                "torchrun for several GPUs or nodes.")
    train.add_argument("store", metavar="STORE", help="patch store written by `bioaug tile`")
    train.add_argument("--out", required=True, metavar="RUN", help="run directory (checkpoint, log, grids)")
    train.add_argument("--new", action="store_true", help="start over, replacing an existing run in RUN")
    _add_common(train)
    add_config_arguments(train, TrainConfig)
    train.set_defaults(handler=cmd_train)

    augment = commands.add_parser("augment", help="sample a synthetic patch store from a trained GAN",
                                  description="Sample the EMA generator of a GAN run: a number per class or enough "
                                  "to balance the classes, optionally truncated and selected by a classifier "
                                  "trained on the real patches; audit for memorised patches and draw latent-space "
                                  "sheets. Reruns with the same options resume.")
    augment.add_argument("run", metavar="RUN", help="run directory written by `bioaug train`")
    augment.add_argument("--out", required=True, metavar="SYNTH_STORE", help="synthetic patch store directory")
    augment.add_argument("--real", metavar="STORE", help="real store to balance, select and audit against "
                         "(default: the run's training store)")
    _add_common(augment)
    add_config_arguments(augment, AugmentConfig)
    augment.set_defaults(handler=cmd_augment)

    evaluate = commands.add_parser("evaluate", help="measure whether synthetic patches help a classifier",
                                   description="Grouped cross-validation over slides (or patients) with label "
                                   "budgets (folds and budget draws fixed per slide in a split file); per fold, "
                                   "draw and budget a GAN trained on the budget's training slides "
                                   "(and, with an unlabelled pool, their confidently pseudo-labelled nuclei) "
                                   "only; the arms of --arms (real, classic, synthetic, pseudo-label and colour "
                                   "baselines) on the same splits, seeds and optimiser steps; metrics with "
                                   "bootstrap CIs and paired tests, "
                                   "generator fidelity and a leakage check. Writes report.md/.json, a LaTeX table "
                                   "and figures. Reruns resume.")
    evaluate.add_argument("store", metavar="STORE", help="labelled patch store written by `bioaug tile`")
    evaluate.add_argument("--out", required=True, metavar="REPORT_DIR", help="report directory (work in "
                          "REPORT_DIR/work)")
    evaluate.add_argument("--synthetic", dest="synthetic", type=_cell_store, nargs="+", default=None,
                          metavar="FOLD-BUDGET=STORE", help="ready synthetic store for a fold and budget (e.g. "
                          "0-0.1=synth; FOLD-BUDGET-DRAW for a budget draw other than 0); that cell trains no "
                          "generator")
    evaluate.add_argument("--external", dest="external", type=_named_store, nargs="+", default=None,
                          metavar="NAME=STORE", help="external test store (repeatable): every classifier is also "
                          "tested on it; adding one to a finished evaluation only predicts")
    _add_common(evaluate)
    add_config_arguments(evaluate, EvaluateConfig, skip=("synthetic", "external"))
    evaluate.set_defaults(handler=cmd_evaluate)

    study = commands.add_parser("study", help="a 'which of these are real?' reader study: page and scoring",
                                description="Make a self-contained HTML page that shows readers a shuffled, "
                                "balanced mix of real and synthetic patches and asks which are real, and score "
                                "the answer files they download from it.")
    study_steps = study.add_subparsers(dest="study_command", required=True, metavar="STEP")
    study_make = study_steps.add_parser("make", help="write DIR/study.html and its answer key DIR/key.json",
                                        description="Write one self-contained HTML page (every patch inlined as "
                                        "raw pixels of one fixed size, nothing loaded from elsewhere) and keep the "
                                        "answer key and provenance beside it in DIR/key.json. Send readers the page "
                                        "only: each reader enters a name, answers real or synthetic (and how sure) "
                                        "per item, and downloads a CSV of the answers at any time.")
    study_make.add_argument("--real", required=True, metavar="STORE", help="store of real patches")
    study_make.add_argument("--synthetic", required=True, metavar="STORE", help="store of synthetic patches "
                            "(written by `bioaug augment`)")
    study_make.add_argument("--out", required=True, metavar="DIR", help="study directory")
    _add_common(study_make)
    add_config_arguments(study_make, StudyConfig)
    study_make.set_defaults(handler=cmd_study_make)
    study_score = study_steps.add_parser("score", help="score readers' answer files against a study",
                                         description="Accuracy with Wilson 95% intervals and a two-sided binomial "
                                         "test against 0.5, sensitivity and specificity (positive: synthetic), per "
                                         "reader and pooled, per class and by confidence, and Fleiss' kappa "
                                         "between readers. Reader names are compared ignoring case and spacing; a "
                                         "blank confidence is refused where the study asked for one. Writes "
                                         "score.md, score.json and score.png.")
    study_score.add_argument("study", metavar="DIR", help="study directory written by `bioaug study make`")
    study_score.add_argument("answers", nargs="+", metavar="ANSWERS.csv", help="answer files downloaded from "
                             "the page, one or more readers")
    study_score.add_argument("--out", metavar="DIR", help="where to write the scores (default: the study "
                             "directory)")
    study_score.set_defaults(handler=cmd_study_score)

    verify = commands.add_parser("verify", help="check that a patch store's files are those its hash promises",
                                 description="Hash every shard's images and manifest and compare them with the "
                                 "SHA-256 recorded when the store was written (opening a store checks only "
                                 "shapes, sizes and row counts). A mismatch is a one-line error naming the shard.")
    verify.add_argument("store", metavar="STORE", help="patch store directory")
    verify.add_argument("--quiet", action="store_true", help="no progress bars or progress log lines")
    verify.set_defaults(handler=cmd_verify)

    demo = commands.add_parser("demo", help="run the whole pipeline on built-in example slides",
                               description="Write procedural example slides and run the whole pipeline on them: "
                               "tile, train a GAN per label budget, augment, evaluate. Ends with the report's path.")
    demo.add_argument("--out", default="demo-out", metavar="DIR", help="output directory (default: demo-out)")
    demo.add_argument("--size", choices=("tiny", "small"), default="tiny",
                      help="example slide size: tiny (default, a few minutes on 2 cores) or small (more "
                      "patches, much slower)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars or progress log lines")
    demo.set_defaults(handler=cmd_demo)
    return parser


#: README code blocks that are generated: a line ``<!-- synopsis: COMMAND --flag ... -->`` before a fenced
#: block makes the block ``synopsis(COMMAND, flags)``; ``make readme`` rewrites them, a test compares them.
_SYNOPSIS_MARK = re.compile(r"^<!-- synopsis: (?P<command>[a-z]+)(?P<flags>(?: --[a-z0-9-]+)*) -->\n"
                            r"```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)
_SYNOPSIS_WIDTH = 110


def _synopsis_value(action: argparse.Action) -> str:
    """How one option shows its value in a synopsis: its choices (a few short ones), else its default, else
    its metavar."""
    choices = getattr(action, "config_choices", None) or action.choices
    if choices and action.nargs not in ("+", "*") and len("|".join(map(str, choices))) <= 30:
        return "|".join(map(str, choices))
    default = getattr(action, "config_default", None)
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, (list, tuple)) and default:
        return " ".join(map(str, default))
    if default is not None and not isinstance(default, (list, tuple, dict)):
        return str(default)
    metavar = action.metavar or action.dest.upper()
    return f"{metavar} ..." if action.nargs in ("+", "*") else str(metavar)


def synopsis(command: str, flags: list[str]) -> str:
    """The usage line of ``bioaug COMMAND`` for the README, made from the parser and the config defaults.

    Positionals and required options come first, then ``[--flag VALUE]`` for each of ``flags``, where VALUE
    is the option's choices, else its default, else its metavar; wrapped with shell line continuations.
    """
    parser = next(action for action in build_parser()._actions
                  if isinstance(action, argparse._SubParsersAction)).choices[command]
    by_flag = {flag: action for action in parser._actions for flag in action.option_strings}
    words = [f"bioaug {command}"]
    for action in parser._actions:
        if not action.option_strings:
            words.append(f"{action.metavar or action.dest}{'...' if action.nargs in ('+', '*') else ''}")
        elif action.required:
            words.append(f"{action.option_strings[0]} {action.metavar or action.dest.upper()}")
    for flag in flags:
        if flag not in by_flag:
            raise KeyError(f"bioaug {command} has no option {flag}")
        action = by_flag[flag]
        words.append(f"[{flag}]" if action.nargs == 0 else f"[{flag} {_synopsis_value(action)}]")
    lines, line = [], words[0]
    for word in words[1:]:
        if len(line) + 1 + len(word) + 2 > _SYNOPSIS_WIDTH:
            lines.append(line + " \\")
            line = "    " + word
        else:
            line += " " + word
    return "\n".join([*lines, line])


def render_synopses(text: str) -> str:
    """``text`` (the README) with every marked synopsis block regenerated from the code."""
    def block(match: re.Match[str]) -> str:
        command, flags = match["command"], match["flags"].split()
        return (f"<!-- synopsis: {command}{match['flags']} -->\n```{match['lang']}\n"
                f"{synopsis(command, flags)}\n```")
    return _SYNOPSIS_MARK.sub(block, text)


def _configure_logging() -> None:
    """Print bioaug's own log lines as ``bioaug: LEVEL: ...`` on stderr; other libraries' loggers are left as
    they are, so their lines never carry bioaug's prefix."""
    logger = logging.getLogger("bioaug")
    logger.setLevel(logging.INFO)
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("bioaug: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False


class _StderrHandler(logging.StreamHandler):
    """A handler for whatever ``sys.stderr`` is when a line is logged (it may be replaced after set-up)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _error(message: str) -> int:
    print(f"bioaug: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bioaug`` console script."""
    from .progress import is_quiet, set_quiet

    _configure_logging()
    # before torch is imported: its pool would otherwise take every core, quota or not (issue 19.11), and its
    # idle threads would spin 300,000 times before sleeping, burning the time slices their partners need beside
    # other work. GNU OpenMP's spin cut to 10,000 (benchmarks/busy_threads.py): beside two busy one-thread
    # processes on 2 cores a classifier step 0.14 -> 0.09 s, on a quiet machine unchanged (0.035 s), where
    # sleeping at once (OMP_WAIT_POLICY=PASSIVE) cost 55%. A policy the user chose is left alone.
    os.environ.setdefault("OMP_NUM_THREADS", str(available_cpus()))
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        return _error(str(exc))
    was_quiet = is_quiet()  # restored on return: a library caller of main() keeps its own setting
    set_quiet(bool(getattr(args, "quiet", False)))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        if getattr(args, "out", None) and not getattr(args, "dry_run", False):
            check_output_dir(args.out)  # a read-only place or a file in the way fails before any work
        return handler(args)
    except BioaugError as exc:
        return _error(str(exc))
    except OSError as exc:  # file-system errors on inputs and outputs are bad input too, if they name a path
        line = describe_os_error(exc)
        if line is None:
            raise
        return _error(line)
    except KeyboardInterrupt:
        print("bioaug: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        set_quiet(was_quiet)


if __name__ == "__main__":
    sys.exit(main())
