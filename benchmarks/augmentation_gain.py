"""Does synthetic data help? The quick CPU evaluation profile on CRCHistoPhenotypes, end to end.

Tiles CRCHistoPhenotypes into a work directory outside the repository (once; reruns reuse the store), runs
``bioaug evaluate`` with ``pipelines/crc-nuclei-quick.yaml`` (resuming an interrupted run), copies the report
into ``docs/results/crc-nuclei-quick/`` and prints the balanced-accuracy table.

Usage::

    python benchmarks/augmentation_gain.py [--data DIR] [--work DIR] [--config FILE] [--set KEY=VALUE ...]

``--set`` overrides config options (YAML values), e.g. ``--set gan_steps=50 epochs=1`` for a smoke run.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import yaml

from bioaug.config import build_config, load_config_file
from bioaug.evaluate.config import EvaluateConfig
from bioaug.evaluate.protocol import run_evaluation
from bioaug.evaluate.report import REPORT_FILES
from bioaug.store import HEADER_NAME, PatchStore
from bioaug.tile import TileConfig, tile

REPO = Path(__file__).resolve().parent.parent
#: CRCHistoPhenotypes images are 20x (0.55 µm/px) and record no resolution.
CRC_MPP = 0.55


def crc_store(data: Path, work: Path, workers: int) -> PatchStore:
    """The CRCHistoPhenotypes patch store under ``work``, tiled on first use."""
    path = work / "crc-store"
    if (path / HEADER_NAME).is_file() and PatchStore(path, require_complete=False).header.complete:
        return PatchStore(path)
    config = TileConfig(label_by="points", labels=[str(data / "nuclei_labels.csv")], slide_mpp=CRC_MPP,
                        workers=workers)
    return tile([data / "images"], path, config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "crchistophenotypes",
                        help="CRCHistoPhenotypes folder with images/ and nuclei_labels.csv")
    parser.add_argument("--work", type=Path, default=REPO.parent / "crc-bench",
                        help="work directory for the store and the evaluation (default: ../crc-bench)")
    parser.add_argument("--config", type=Path, default=REPO / "pipelines" / "crc-nuclei-quick.yaml")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config options")
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "results" / "crc-nuclei-quick",
                        help="where the report is copied")
    parser.add_argument("--workers", type=int, default=2, help="tiling worker processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one line per finished classifier
    if not (args.data / "images").is_dir() or not (args.data / "nuclei_labels.csv").is_file():
        sys.exit(f"CRCHistoPhenotypes not found at {args.data} (expected images/ and nuclei_labels.csv); "
                 "pass its location with --data")

    values = load_config_file(args.config)
    for item in args.set:
        key, _, value = item.partition("=")
        values[key] = yaml.safe_load(value)
    config = build_config(EvaluateConfig, values, source=args.config)
    store = crc_store(args.data, args.work, args.workers)
    report = run_evaluation(store, args.work / "evaluation", config)

    args.results.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES.values():
        if (report / name).is_file():
            shutil.copy2(report / name, args.results / name)
    summary = json.loads((report / REPORT_FILES["json"]).read_text())
    print(f"{'budget':>7}  {'arm':<15} balanced accuracy (mean ± sd [95% CI], n)")
    for row in summary["summaries"]:
        if row["metric"] == "balanced_accuracy":
            print(f"{100 * row['budget']:>6g}%  {row['arm']:<15} {row['mean']:.3f} ± {row['sd']:.3f} "
                  f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}], n={row['n']}")
    print(f"report: {args.results / REPORT_FILES['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
