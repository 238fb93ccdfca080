"""The ``bioaug`` command: a thin layer that parses options, calls the library and prints.

Every stage's options come from its config dataclass (see ``bioaug.config``), so ``--help``, config files and
the library share one set of names and defaults. A ``BioaugError`` is printed as one line and exits 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from . import __version__
from .config import add_config_arguments, config_to_dict, resolve_config
from .errors import BioaugError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of options (flags override it)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _print_config(config: object) -> None:
    print(json.dumps(config_to_dict(config), indent=2, sort_keys=True))


def cmd_tile(args: argparse.Namespace) -> int:
    from .tiling import TileConfig, tile

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
    from .store import PatchStore

    store = PatchStore(args.store)
    config = resolve_config(TrainConfig, args).resolve(store.patch_size)
    if args.dry_run:
        _print_config(config)
        return 0
    run = train(store, args.out, config, new=args.new, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{run}: checkpoint {run / 'checkpoint.pt'}, sample grids in {run / 'samples'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(Path(args.out), size=args.size, workers=args.workers, progress=not args.quiet)
    print(f"demo finished: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .gan.config import TrainConfig
    from .tiling import TileConfig

    parser = argparse.ArgumentParser(prog="bioaug", description="Synthetic histology for small, imbalanced "
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
                                "labelled patches. Resumes from RUN/checkpoint.pt unless --new. Runs under "
                                "torchrun for several GPUs or nodes.")
    train.add_argument("store", metavar="STORE", help="patch store written by `bioaug tile`")
    train.add_argument("--out", required=True, metavar="RUN", help="run directory (checkpoint, log, grids)")
    train.add_argument("--new", action="store_true", help="start over, replacing an existing run in RUN")
    _add_common(train)
    add_config_arguments(train, TrainConfig)
    train.set_defaults(handler=cmd_train)

    demo = commands.add_parser("demo", help="run the pipeline on the built-in example slide",
                               description="Write the procedural example slide and run the pipeline on it.")
    demo.add_argument("--out", default="demo-out", metavar="DIR", help="output directory (default: demo-out)")
    demo.add_argument("--size", choices=("tiny", "small"), default="small",
                      help="example slide size: tiny (seconds) or small (default)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bioaug`` console script."""
    logging.basicConfig(level=logging.INFO, format="bioaug: %(levelname)s: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BioaugError as exc:
        print(f"bioaug: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("bioaug: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
