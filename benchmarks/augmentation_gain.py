"""Does synthetic data help? The quick CPU evaluation profile on CRCHistoPhenotypes, end to end.

Tiles CRCHistoPhenotypes twice into a work directory outside the repository (once; reruns reuse the stores):
with its annotated nuclei (``--label-by points``) and, for the unlabelled pool, with the nuclei bioaug's own
detector finds (``--label-by none``, never the annotated centres). Then runs ``bioaug evaluate`` with
``pipelines/crc-nuclei-quick.yaml`` on a Dask cluster (``--scheduler``, by default ``local:2``: two worker
processes of one torch thread each, so the tasks of both folds keep both cores busy), which writes the report.
Interrupted runs resume; each profile works in ``WORK/evaluation-<profile>``. The report is copied into
``docs/results/crc-nuclei-quick/`` (``--results``) and the macro-F1 table printed; the copies name paths
relative to the repository. The stores are cut at 32 px with ``--border reflect`` by default (every annotated
nucleus, those near an image's edge too); the learning-curve profile runs on a store cut at 48 px::

    python benchmarks/augmentation_gain.py --config pipelines/crc-nuclei-curve.yaml --patch-size 48 \
        --results docs/results/crc-nuclei-curve

Usage::

    python benchmarks/augmentation_gain.py [--data DIR] [--work DIR] [--config FILE] [--set KEY=VALUE ...] \
        [--scheduler local:2|ADDRESS]

``--set`` overrides config options (YAML values), e.g. ``--set 'classifier={steps: 20}'`` for a smoke run.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
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


def crc_stores(data: Path, work: Path, workers: int, patch_size: int = 32,
               border: str = "skip") -> tuple[PatchStore, PatchStore]:
    """The labelled CRCHistoPhenotypes store and its unlabelled pool under ``work``, tiled on first use
    (``crc-store``/``crc-pool`` at 32 px, else ``crc-store-<size>``/``crc-pool-<size>``)."""
    stores = []
    suffix = "" if patch_size == 32 else f"-{patch_size}"
    shape = {"slide_mpp": CRC_MPP, "workers": workers, "patch_size": patch_size, "border": border}
    for name, config in ((f"crc-store{suffix}", TileConfig(label_by="points", labels=[str(data / "nuclei_labels.csv")],
                                                           **shape)),
                         (f"crc-pool{suffix}", TileConfig(label_by="none", **shape))):
        path = work / name
        if (path / HEADER_NAME).is_file() and PatchStore(path, require_complete=False).header.complete:
            stores.append(PatchStore(path))
        else:
            stores.append(tile([data / "images"], path, config))
    return stores[0], stores[1]


#: Report figures that show real patches: they stay beside the report written at run time, never in the
#: repository (CRCHistoPhenotypes' licence is research-only: no crops of it are committed).
REAL_PATCH_FIGURES = ("samples_figure",)


def relative_paths(results: Path) -> None:
    """Rewrite the copied report's paths relative to the repository (``../`` for its neighbours), so that the
    committed results name no one's home directory, and its links to the figures of real patches (not copied)
    as a note of where they are."""
    for path in results.iterdir():
        if path.suffix in (".md", ".json", ".tex"):
            text = path.read_text()
            for prefix, relative in ((f"{REPO}/", ""), (f"{REPO.parent}/", "../")):
                # only where a path starts: ".../evaluation/work/" stays when the parent is "/work"
                text = re.sub(r"(?<![\w./-])" + re.escape(prefix), relative, text)
            for key in REAL_PATCH_FIGURES:
                name = REPORT_FILES[key]
                text = text.replace(f"![{Path(name).stem}]({name})",
                                    f"({name}, real patches beside synthetic ones, is in the report written at run "
                                    "time, not in the repository)")
            path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "crchistophenotypes",
                        help="CRCHistoPhenotypes folder with images/ and nuclei_labels.csv")
    parser.add_argument("--work", type=Path, default=REPO.parent / "crc-bench",
                        help="work directory for the stores and the evaluation (default: ../crc-bench)")
    parser.add_argument("--config", type=Path, default=REPO / "pipelines" / "crc-nuclei-quick.yaml")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config options")
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "results" / "crc-nuclei-quick",
                        help="where the report is copied")
    parser.add_argument("--workers", type=int, default=2, help="tiling worker processes")
    parser.add_argument("--patch-size", type=int, default=32, help="patch size of the stores; a profile's "
                                                                   "classifier view may be smaller")
    parser.add_argument("--border", default="reflect", help="tile's --border for the stores (reflect keeps every "
                                                            "annotated nucleus at large patch sizes)")
    parser.add_argument("--scheduler", default="local:2", help="Dask scheduler of the evaluation: local:N worker "
                                                                "processes of one thread, or an address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one line per finished classifier
    logging.getLogger("distributed").setLevel(logging.WARNING)  # not every worker and connection of the cluster
    if not (args.data / "images").is_dir() or not (args.data / "nuclei_labels.csv").is_file():
        sys.exit(f"CRCHistoPhenotypes not found at {args.data} (expected images/ and nuclei_labels.csv); "
                 "pass its location with --data")

    values = load_config_file(args.config)
    for item in args.set:
        key, _, value = item.partition("=")
        values[key] = yaml.safe_load(value)
    store, pool = crc_stores(args.data, args.work, args.workers, args.patch_size, args.border)
    values["unlabelled"] = str(pool.path)
    values["scheduler"] = args.scheduler
    config = build_config(EvaluateConfig, values, source=args.config)
    report = run_evaluation(store, args.work / f"evaluation-{args.config.stem}", config)

    args.results.mkdir(parents=True, exist_ok=True)
    for key, name in REPORT_FILES.items():
        if key not in REAL_PATCH_FIGURES and (report / name).is_file():
            shutil.copy2(report / name, args.results / name)
    (args.results / REPORT_FILES["samples_figure"]).unlink(missing_ok=True)  # one an earlier copy left
    shutil.copy2(report / "config.json", args.results / "config.json")
    relative_paths(args.results)
    summary = json.loads((report / REPORT_FILES["json"]).read_text())
    print(f"{'budget':>7}  {'arm':<18} macro-F1 (mean ± sd [95% CI over test images], n)")
    for row in summary["summaries"]:
        if row["metric"] == "macro_f1":
            print(f"{100 * row['budget']:>6g}%  {row['arm']:<18} {row['mean']:.3f} ± {row['sd']:.3f} "
                  f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}], n={row['n']}")
    print(f"report: {args.results / REPORT_FILES['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
