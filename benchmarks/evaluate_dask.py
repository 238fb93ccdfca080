"""``bioaug evaluate`` in one process against the same evaluation on a Dask cluster, one after the other.

The same profile (by default the quick one, ``pipelines/crc-nuclei-quick.yaml``) on the same CRCHistoPhenotypes
stores (``benchmarks/augmentation_gain.py`` tiles them once under ``--work``), run twice from nothing, each in
a fresh work directory: first in this process (torch's threads as bioaug sets them), then with
``--scheduler`` (by default ``local:2``, two worker processes of one thread). Reported: wall seconds of each, their
ratio (one-process time over Dask time: at least 0.95 means Dask is not slower), and whether both runs wrote
the same numbers (summaries, comparisons and every run less its timing). Writes ``--out`` (JSON)::

    python benchmarks/evaluate_dask.py                       # the quick profile both ways (about 4 hours)
    python benchmarks/evaluate_dask.py --set seeds=[0] 'generator={preset: plain, time_budget: 120, budget_clock: cpu}'

``--set`` overrides profile options as in ``augmentation_gain.py`` (a section given replaces the profile's).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from augmentation_gain import REPO, crc_stores
from bioaug.config import build_config, load_config_file
from bioaug.cpus import available_cpus
from bioaug.evaluate.config import EvaluateConfig
from bioaug.evaluate.protocol import run_evaluation
from bioaug.provenance import write_json_atomic

RESULTS = REPO / "benchmarks" / "results" / "evaluate_dask.json"


def numbers(report: dict) -> dict:
    """What must not depend on where the work ran: summaries, comparisons and every run less its timing."""
    return {"summaries": report["summaries"], "comparisons": report["comparisons"],
            "runs": [{key: value for key, value in run.items() if key != "seconds"} for run in report["runs"]]}


def timed_evaluation(store, values: dict, scheduler: str | None, work: Path, source: Path) -> tuple[float, dict]:
    """Wall seconds of one evaluation from nothing in a fresh directory under ``work``, and its report numbers."""
    config = build_config(EvaluateConfig, {**values, "scheduler": scheduler}, source=source)
    with tempfile.TemporaryDirectory(dir=work, prefix="evaluate-dask-") as scratch:
        started = time.perf_counter()
        report = run_evaluation(store, Path(scratch) / "evaluation", config, progress=False)
        seconds = time.perf_counter() - started
        return seconds, numbers(json.loads((report / "report.json").read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "crchistophenotypes")
    parser.add_argument("--work", type=Path, default=REPO.parent / "crc-bench",
                        help="where the stores are (tiled on first use) and the runs go (deleted after)")
    parser.add_argument("--config", type=Path, default=REPO / "pipelines" / "crc-nuclei-quick.yaml")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override profile options")
    parser.add_argument("--scheduler", default="local:2", help="the Dask side: local:N or a scheduler address")
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--border", default="reflect")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    values = load_config_file(args.config)
    for item in args.set:
        key, _, value = item.partition("=")
        values[key] = yaml.safe_load(value)
    store, pool = crc_stores(args.data, args.work, 2, args.patch_size, args.border)
    values["unlabelled"] = str(pool.path)
    runs = {}
    for name, scheduler in (("one process", None), ("dask", args.scheduler)):
        print(f"{name}: evaluating ...", flush=True)
        seconds, result = timed_evaluation(store, values, scheduler, args.work, args.config)
        runs[name] = {"scheduler": scheduler, "seconds": round(seconds, 1), "numbers": result}
        print(f"{name}: {seconds:.0f} s", flush=True)
    local, dask = runs["one process"], runs["dask"]
    results = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "profile": str(args.config.relative_to(REPO))
               if args.config.is_relative_to(REPO) else str(args.config), "overrides": args.set,
               "available_cpus": available_cpus(), "scheduler": args.scheduler,
               "seconds": {"one process": local["seconds"], "dask": dask["seconds"]},
               "ratio_one_process_over_dask": round(local["seconds"] / dask["seconds"], 3),
               "same_numbers": local["numbers"] == dask["numbers"]}
    write_json_atomic(args.out, results)
    print(json.dumps({key: value for key, value in results.items() if key != "overrides"}, indent=2))
    return 0 if results["same_numbers"] else 1


if __name__ == "__main__":
    sys.exit(main())
