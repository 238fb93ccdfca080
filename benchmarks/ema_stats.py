"""Batch-norm statistics of the sampling generator: the training generator's, or standing ones (its own).

A GAN samples from an exponential moving average (EMA) of the generator's weights, but batch-norm statistics
are not weights: during training the EMA carries the training generator's running statistics. This judges
each finished run twice, with the very same EMA weights and latents: once with the training generator's
statistics (what checkpoints held before ``ema_stats``), once with standing statistics measured on the EMA's
own outputs (:func:`bioaug.gan.ema.standing_statistics`, what ``ema_stats: standing`` writes). Judging is
that of ``benchmarks/generator_choice.py``: Fréchet distance, KID, precision/recall and two-sample accuracy in
the features of a classifier trained on ``--reference``, per-class diversity and what selection keeps.

Writes ``results.json``, ``results.md`` and ``ema_stats.png`` under ``--out``. For the runs of the generator
choice at 1,800 CPU s (its cached feature classifier is reused through ``--work``)::

    python benchmarks/ema_stats.py --reference fold-0-training-images-store --work gen1800/work \\
        --runs gen1800/work/runs/plain gen1800/work/runs/resnet gen1800/work/runs/resnet+unlabelled
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "ema_stats"
STATISTICS = ("training", "standing")


def _generator_choice():
    """The judging code of ``generator_choice.py`` beside this file (benchmarks are scripts, not a package)."""
    if "generator_choice" in sys.modules:
        return sys.modules["generator_choice"]
    path = Path(__file__).resolve().with_name("generator_choice.py")
    spec = importlib.util.spec_from_file_location("generator_choice", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def sampling_generators(run: Path, batches: int, seed: int) -> dict[str, Any]:
    """The run's EMA generator with each kind of batch-norm statistics, by name."""
    from bioaug.gan import load_generator
    from bioaug.gan.ema import standing_statistics
    from bioaug.gan.run import RunDirectory

    run_dir = RunDirectory(run)
    ema, meta = load_generator(run_dir.checkpoint)
    trained = run_dir.load_checkpoint()["generator"]
    buffers = {name: tensor for name, tensor in trained.items()
               if name.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    training = ema
    training.load_state_dict({**ema.state_dict(), **buffers})
    standing = standing_statistics(training, len(meta["class_names"]), batches=batches,
                                   batch_size=int(meta["config"]["batch_size"]), seed=seed)
    return {"training": training, "standing": standing, "steps": int(meta["step"]),
            "preset": meta["config"].get("preset", "plain")}


def markdown(results: dict[str, Any]) -> str:
    names = results["class_names"]
    lines = ["# Batch-norm statistics of the sampling generator", "",
             f"Same EMA weights and latents per run; judged in the features of a {results['classifier']['network']} "
             f"trained on `{results['reference']}`, {results['n_real']} real patches and as many samples; standing "
             f"statistics over {results['batches']} batches.", "",
             "| run | steps | statistics | Fréchet | KID | precision | recall | two-sample acc. | "
             f"kept ({'/'.join(name[:4] for name in names)}) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        fid = row["fidelity"]
        kept = "/".join(str(row["selection_kept"][name]) for name in names)
        lines.append(f"| {row['run_name']} | {row['steps']} | {row['statistics']} | {fid['frechet_distance']:.1f} | "
                     f"{fid['kid']:.2f} | {fid['precision']:.3f} | {fid['recall']:.3f} | "
                     f"{fid['two_sample_accuracy']:.3f} | {kept} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="finished `bioaug train` runs")
    parser.add_argument("--reference", required=True, help="store of the real patches the samples are judged "
                                                           "against and the feature classifier trains on")
    parser.add_argument("--batches", type=int, help="batches the standing statistics average over "
                                                    "(default: what the trainer uses)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--samples-per-class", type=int, default=500, help="real patches (and samples) per class")
    parser.add_argument("--classifier-steps", type=int, default=400, help="steps of the feature classifier")
    parser.add_argument("--min-confidence", type=float, default=0.8, help="selection threshold (as augment)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, help="cached feature classifier (default: OUT/work)")
    args = parser.parse_args(argv)

    import torch

    from bioaug.gan.run import RunDirectory
    from bioaug.gan.sampling import generate
    from bioaug.gan.trainer import STANDING_BATCHES
    from bioaug.provenance import run_record
    from bioaug.store import PatchStore

    choice = _generator_choice()
    torch.set_num_threads(args.threads)
    batches = args.batches or STANDING_BATCHES
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    reference = PatchStore(args.reference)
    real = choice.judges(reference, args, work)
    names = real["names"]
    results: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "reference": str(reference.path),
        "reference_sha256": reference.content_hash, "class_names": names, "n_real": int(len(real["labels"])),
        "classifier": real["classifier"], "batches": batches, "seed": args.seed,
        "provenance": run_record({key: str(value) for key, value in vars(args).items()},
                                 inputs={str(run): RunDirectory(run).checkpoint_sha256() for run in args.runs}),
        "rows": []}
    # generated samples only: the sheet may be committed, and the real patches' licence forbids copies of them
    panels: list[tuple[str, list]] = []
    for run in args.runs:
        generators = sampling_generators(run, batches, args.seed)
        for statistics in STATISTICS:
            images = generate(generators[statistics], real["labels"], seed=args.seed)
            judged = choice.judge_images(images, real, args)
            panels.append((f"{run.name}, {statistics}", judged.pop("grid_rows")))
            results["rows"].append({"run": str(run), "run_name": run.name, "preset": generators["preset"],
                                    "steps": generators["steps"], "statistics": statistics, **judged})
            fidelity = judged["fidelity"]
            print(f"{run.name} ({statistics}): Fréchet {fidelity['frechet_distance']:.1f}, two-sample accuracy "
                  f"{fidelity['two_sample_accuracy']:.3f}", file=sys.stderr)

    choice.write_outputs(args.out, results, markdown(results), choice.side_by_side(panels, names), "ema_stats.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
