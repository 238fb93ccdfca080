"""The Python half of ``benchmarks/gpu_check.sh``: a store to train on, the resume check, DDP verification and
the summary. Each subcommand prints one JSON object (and writes it with ``--json``)::

    python benchmarks/gpu_check.py store DIR --size 32
    python benchmarks/gpu_check.py resume --store DIR --work TMP --presets plain resnet --steps 100 --device cuda
    python benchmarks/gpu_check.py ddp-verify RUN --steps 20 --world-size 2
    python benchmarks/gpu_check.py summary OUT

The resume check trains ``steps`` straight through twice and ``steps / 2`` plus a resumed ``steps / 2`` once,
and compares every weight of the generator, its EMA and the discriminator. On the CPU the resumed run must be
bit-identical. On CUDA, cuDNN's autotuned kernels are not bit-reproducible, so the resumed run is compared
with the run-to-run difference of the two straight runs measured in the same check: it matches when its
difference from the first straight run is no larger than that floor allows.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gan_throughput import random_store

NETWORKS = ("generator", "generator_ema", "discriminator")
#: A resumed CUDA run matches when it differs from a straight run by at most this multiple of the difference
#: between two straight runs (plus a float32 rounding allowance, for a floor of exactly zero).
CUDA_TOLERANCE_FACTOR = 4.0
FLOAT_ALLOWANCE = 1e-6


def _max_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for network in NETWORKS:
        for name, tensor in a[network].items():
            if tensor.is_floating_point():
                worst = max(worst, float((tensor.float() - b[network][name].float()).abs().max()))
    return worst


def _emit(result: dict, path: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        path.write_text(text + "\n")


def cmd_store(args: argparse.Namespace) -> dict:
    store = random_store(Path(args.path), args.size, count=args.count)
    return {"store": str(store.path), "patches": len(store), "patch_size": store.patch_size}


def cmd_resume(args: argparse.Namespace) -> dict:
    results = [_resume(args, preset) for preset in args.presets]
    return {"check": "resume", "results": results, "matches": all(result["matches"] for result in results)}


def _resume(args: argparse.Namespace, preset: str) -> dict:
    import torch

    from bioaug.gan import TrainConfig, train
    from bioaug.gan.run import RunDirectory

    base = dict(preset=preset, device=args.device, snapshot_every=10 ** 9, log_every=max(1, args.steps // 4),
                checkpoint_every=10 ** 9, seed=0)
    if args.channels:
        base.update(channels=args.channels, max_channels=4 * args.channels, batch_size=args.batch_size)
    work = Path(args.work)
    started = time.perf_counter()
    runs = {}
    for name in ("straight", "straight-again"):
        runs[name] = train(args.store, work / f"{preset}-{name}", TrainConfig(steps=args.steps, **base),
                           new=True, progress=False)
    half = train(args.store, work / f"{preset}-resumed", TrainConfig(steps=args.steps // 2, **base), new=True,
                 progress=False)
    train(args.store, half, TrainConfig(steps=args.steps, **base), progress=False)
    states = {name: RunDirectory(run).load_checkpoint() for name, run in {**runs, "resumed": half}.items()}
    floor = _max_difference(states["straight"], states["straight-again"])
    resumed = _max_difference(states["straight"], states["resumed"])
    on_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if on_cuda:
        matches = resumed <= CUDA_TOLERANCE_FACTOR * floor + FLOAT_ALLOWANCE
    else:
        matches = resumed == 0.0
    result = {"preset": preset, "steps": args.steps, "device": args.device,
            "cuda": on_cuda, "max_abs_difference_resumed": resumed, "max_abs_difference_two_straight_runs": floor,
            "bit_identical": resumed == 0.0, "matches": bool(matches),
            "step_counts": {name: int(state["step"]) for name, state in states.items()},
            "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result), file=sys.stderr)
    return result


def cmd_ddp_verify(args: argparse.Namespace) -> dict:
    import math

    from bioaug.gan.run import RunDirectory

    run = RunDirectory(args.run)
    state = run.load_checkpoint()
    lines = run.read_log()
    losses = [line["loss_d"] for line in lines if "loss_d" in line]
    problems = []
    if state["step"] != args.steps:
        problems.append(f"checkpoint at step {state['step']}, expected {args.steps}")
    if state["world_size"] != args.world_size or len(state["rng"]) != args.world_size:
        problems.append(f"checkpoint written by {state['world_size']} ranks, expected {args.world_size}")
    if not losses or not all(value is not None and math.isfinite(value) for value in losses):
        problems.append("discriminator losses missing or not finite")
    return {"check": "ddp", "world_size": int(state["world_size"]), "step": int(state["step"]),
            "preset": state["config"]["preset"], "loss_d": losses, "ok": not problems, "problems": problems}


def cmd_summary(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    checks = [json.loads(line) for line in (out / "checks.jsonl").read_text().splitlines() if line.strip()]
    details = {}
    for name in ("throughput", "resume", "ddp", "compile"):
        path = out / f"{name}.json"
        if path.is_file():
            try:
                details[name] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                details[name] = {"error": f"unreadable: {exc}"}
    failed = [check["name"] for check in checks if check["status"] != "ok"]
    summary = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "checks": checks, "failed": failed,
               "details": details}
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    for check in checks:
        print(f"{check['name']:<22} {check['status']:<8} {check['seconds']:>6} s", file=sys.stderr)
    return {"failed": failed, "summary": str(out / "gpu_check.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the result here")
    commands = parser.add_subparsers(dest="command", required=True)
    store = commands.add_parser("store")
    store.add_argument("path")
    store.add_argument("--size", type=int, default=32)
    store.add_argument("--count", type=int, default=192)
    store.set_defaults(handler=cmd_store)
    resume = commands.add_parser("resume")
    resume.add_argument("--store", required=True)
    resume.add_argument("--work", required=True)
    resume.add_argument("--presets", nargs="+", default=["plain"])
    resume.add_argument("--steps", type=int, default=100)
    resume.add_argument("--device", default="auto")
    resume.add_argument("--channels", type=int, default=0, help="small networks for a smoke run (0: defaults)")
    resume.add_argument("--batch-size", type=int, default=12)
    resume.set_defaults(handler=cmd_resume)
    ddp = commands.add_parser("ddp-verify")
    ddp.add_argument("run")
    ddp.add_argument("--steps", type=int, required=True)
    ddp.add_argument("--world-size", type=int, default=2)
    ddp.set_defaults(handler=cmd_ddp_verify)
    summary = commands.add_parser("summary")
    summary.add_argument("out")
    summary.set_defaults(handler=cmd_summary)
    args = parser.parse_args()
    result = args.handler(args)
    _emit(result, args.json)
    if result.get("matches") is False or result.get("ok") is False or result.get("failed"):
        sys.exit(1)


if __name__ == "__main__":
    main()
