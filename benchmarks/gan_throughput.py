"""GAN training throughput: the bioaug trainer against a minimal hand-written loop of the same networks.

For each patch size and generator preset, these cases run in separate processes (so each peak memory is its
own):

- ``minimal``: the preset's networks, Adam and hinge loss (and the discriminator's reconstruction loss, for a
  preset that has one) on batches from an in-memory tensor, with the trainer's device settings (bf16 autocast
  on CUDA, channels-last); nothing else.
- ``trainer``: ``bioaug.gan.train`` with its defaults (class-balanced batches read from a store, adaptive
  augmentation, EMA, logging); its rates are taken from ``log.jsonl`` after a warm-up interval, which
  excludes snapshot and checkpoint time as the trainer itself does.
- ``trainer+aug``: the same with every augmentation fixed at p = 0.5, the cost once ADA has raised p.
- ``trainer+compile`` (only when asked for with ``--cases``): the trainer with ``torch.compile``; the warm-up
  interval absorbs the compilation.

Every trainer case is measured for each ``--variants`` entry, a named set of ``TrainConfig`` options
(:data:`VARIANTS`): the ratio of a variant to ``default`` in the same run is what an option buys. Rates are
images per wall second and per CPU second of the process (all its threads): on a machine that other work
shares, CPU seconds are the fair measure. The ratio trainer / minimal is the trainer's overhead. Each case is
repeated (interleaved with the others) and the best kept, since other work on a shared machine only ever
slows a measurement down. Peak memory is the process's maximum resident set (``ru_maxrss``) on the CPU and
``torch.cuda.max_memory_allocated`` on CUDA. Prints a table and writes ``benchmarks/results/gan_throughput.json``::

    python benchmarks/gan_throughput.py                 # plain preset, 32 and 64 px, about 4 minutes on 2 CPU cores
    python benchmarks/gan_throughput.py --sizes 32 --threads 1 2 --repeats 3
    python benchmarks/gan_throughput.py --cases trainer+aug --variants default no-channels-last bf16 d-steps-1 \\
        --presets plain fastgan --steps 6 --warmup 3 --repeats 1
    python benchmarks/gan_throughput.py --device cuda --sizes 32 64 128 --presets plain resnet --repeats 1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "gan_throughput.json"
CASES = ("minimal", "trainer", "trainer+aug", "trainer+compile")
DEFAULT_CASES = CASES[:3]
#: Timed steps per patch size by default (after WARMUP steps), sized for a few minutes on 2 CPU cores; on
#: CUDA a step takes milliseconds, so more are timed.
DEFAULT_STEPS = {32: 20, 64: 10, 128: 10}
CUDA_STEPS = 100
WARMUP = 5
CLASSES = 3
#: Named sets of TrainConfig options the trainer cases are measured with (each against ``default``).
VARIANTS: dict[str, dict] = {
    "default": {},
    "no-channels-last": {"channels_last": False},
    "bf16": {"precision": "bf16"},
    "d-steps-1": {"d_steps": 1},
    "no-stain": {"diffaugment": ["color", "translation", "cutout"]},
    "d-steps-1+bf16": {"d_steps": 1, "precision": "bf16"},
}


def random_store(path: Path, patch_size: int, count: int = 192):
    """A labelled store of random patches: throughput does not depend on what the patches show."""
    import numpy as np

    from bioaug.store import StoreHeader, StoreWriter

    rng = np.random.default_rng(0)
    header = StoreHeader(patch_size=patch_size, mpp=0.5, class_names=[f"class{k}" for k in range(CLASSES)])
    writer = StoreWriter(path, header)
    images = rng.integers(0, 256, (count, patch_size, patch_size, 3), dtype=np.uint8)
    rows = [{"slide": "bench", "label": f"class{i % CLASSES}"} for i in range(count)]
    writer.write_shard("bench", images, rows, input_key="bench")
    return writer.finalize()


def _peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _device(choice: str):
    import torch

    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def _minimal(store, config, steps: int, warmup: int) -> tuple[float, float, object]:
    """Images per wall and per CPU second of the bare loop: ``d_steps`` D updates and one G update per step."""
    import torch

    from bioaug.gan.data import load_images
    from bioaug.gan.losses import discriminator_hinge_loss, generator_hinge_loss
    from bioaug.gan.networks import build_discriminator, build_generator

    device = _device(config.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as the trainer sets it
    torch.manual_seed(0)
    generator = build_generator(config, CLASSES, store.patch_size).to(device, memory_format=torch.channels_last)
    discriminator = build_discriminator(config, CLASSES, store.patch_size).to(device,
                                                                             memory_format=torch.channels_last)
    betas = (float(config.betas[0]), float(config.betas[1]))
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas)
    batch = config.batch_size
    real = load_images(store, list(range(batch)), device, channels_last=True)
    labels = torch.arange(batch, device=device) % CLASSES
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    reconstructs = getattr(discriminator, "reconstructs", False)

    def step() -> None:
        for _ in range(config.d_steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                with torch.no_grad():
                    fake = generator(torch.randn(batch, config.z_dim, device=device), labels)
                if reconstructs:
                    scores, reconstruction = discriminator(torch.cat([real, fake]), torch.cat([labels, labels]),
                                                           reconstruct=batch)
                else:
                    scores, reconstruction = discriminator(torch.cat([real, fake]), torch.cat([labels, labels])), 0
            loss_d = discriminator_hinge_loss(*scores.float().chunk(2)) + reconstruction
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        discriminator.requires_grad_(False)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            fake = generator(torch.randn(batch, config.z_dim, device=device), labels)
            loss_g = generator_hinge_loss(discriminator(fake, labels).float())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        discriminator.requires_grad_(True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (steps * batch / (time.perf_counter() - start), steps * batch / (time.process_time() - cpu_start),
            device)


def _trainer(store, config, steps: int, warmup: int, run: Path) -> tuple[float, float, object]:
    """Images per wall and per CPU second of ``bioaug.gan.train`` from its log, leaving out the first (warm-up)
    interval."""
    import dataclasses

    from bioaug.gan import train
    from bioaug.gan.run import RunDirectory

    config = dataclasses.replace(config, steps=warmup + steps, log_every=warmup, snapshot_every=warmup + steps,
                                 checkpoint_every=warmup + steps)
    train(store, run, config, progress=False)
    lines = RunDirectory(run).read_log()
    logged = [line for line in lines if "images_per_s" in line]
    images = [(line["step"] - previous["step"]) * config.batch_size for previous, line in zip(logged, logged[1:])]
    rates = []
    for key in ("images_per_s", "images_per_cpu_s"):
        seconds = sum(count / line[key] for count, line in zip(images, logged[1:]))
        rates.append(sum(images) / seconds)
    return rates[0], rates[1], _device(config.device)


def run_case(case: str, size: int, preset: str, steps: int, threads: int, device: str, *, variant: str = "default",
             warmup: int = WARMUP) -> dict:
    """One measurement, in this process."""
    import torch

    from bioaug.gan import TrainConfig

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = random_store(Path(tmp) / "store", size)
        config = TrainConfig(**{"preset": preset, "ada": case != "trainer+aug",
                                "diffaugment_p": 0.5 if case == "trainer+aug" else 0.0,
                                "compile": case == "trainer+compile", "device": device, "seed": 0,
                                **VARIANTS[variant]}).resolve(size)
        if case == "minimal":
            rate, cpu_rate, where = _minimal(store, config, steps, warmup)
        else:
            rate, cpu_rate, where = _trainer(store, config, steps, warmup, Path(tmp) / "run")
        return {"size": size, "preset": preset, "case": case, "variant": variant, "images_per_s": round(rate, 1),
                "images_per_cpu_s": round(cpu_rate, 1), "steps": steps, "warmup": warmup,
                "batch_size": config.batch_size, "device": str(where), "threads": torch.get_num_threads(),
                "gpu": torch.cuda.get_device_name(where) if where.type == "cuda" else None,
                "peak_memory_mb": round(_peak_memory_mb(where), 1),
                "memory_kind": "cuda_max_allocated" if where.type == "cuda" else "max_rss"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--presets", nargs="+", default=["plain"], help="generator presets to measure")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(DEFAULT_CASES))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["default"],
                        help="TrainConfig option sets the trainer cases are measured with (see VARIANTS)")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="untimed steps before the timed ones")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed steps per case (default by size on CPU, {CUDA_STEPS} on CUDA)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch thread counts to measure; 0 = torch's choice (default: 1, the fastest on a "
                             "shared 2-core machine, where 2 threads can be several times slower)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best is reported")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # a child process: measure one case and print it
        print(json.dumps(run_case(args.case, args.sizes[0], args.presets[0], args.steps, args.threads[0],
                                  args.device, variant=args.variants[0], warmup=args.warmup)))
        return
    variants = ["default", *[variant for variant in args.variants if variant != "default"]]
    # the baseline loop is always measured, once; every trainer case with each variant
    runs = [("minimal", "default")] + [(case, variant) for case in args.cases if case != "minimal"
                                       for variant in variants]
    best: dict[tuple[int, str, int, str, str], dict] = {}
    failures: list[dict] = []
    for size in args.sizes:
        steps = args.steps or (CUDA_STEPS if args.device == "cuda" else DEFAULT_STEPS.get(size, 10))
        for preset in args.presets:
            for threads in args.threads:
                for _ in range(args.repeats):  # interleaved: a burst of load elsewhere hits every case alike
                    for case, variant in runs:
                        child = subprocess.run([sys.executable, __file__, "--case", case, "--sizes", str(size),
                                                "--presets", preset, "--steps", str(steps), "--threads",
                                                str(threads), "--device", args.device, "--variants", variant,
                                                "--warmup", str(args.warmup)],
                                               capture_output=True, text=True)
                        if child.returncode:  # report and go on: one failing case must not hide the others
                            reason = (child.stderr.strip().splitlines() or ["no output"])[-1]
                            failures.append({"size": size, "preset": preset, "case": case, "variant": variant,
                                             "error": reason})
                            print(f"  {size} px, {preset}, {case}, {variant}: FAILED: {reason}", file=sys.stderr)
                        else:
                            row = json.loads(child.stdout.strip().splitlines()[-1])
                            print(f"  {size} px, {preset}, {row['threads']} thread(s), {case}, {variant}: "
                                  f"{row['images_per_s']} images/s, {row['images_per_cpu_s']} per CPU s",
                                  file=sys.stderr)
                            key = (size, preset, threads, case, variant)
                            if key not in best or row[_rate(row)] > best[key][_rate(row)]:
                                best[key] = row
                        _write_report(args, best, failures)  # after every case: a killed run keeps what it had
    print(f"{'size':>5} {'preset':<8} {'threads':>7} {'case':<16} {'variant':<16} {'images/s':>9} "
          f"{'per CPU s':>9} {'vs minimal':>10} {'vs default':>10} {'peak MB':>8}")
    for (size, preset, _threads, case, variant), row in best.items():
        ratios = [f"{row[key]:>10.2f}" if row[key] is not None else f"{'-':>10}"
                  for key in ("ratio_to_minimal", "ratio_to_default")]
        print(f"{size:>5} {preset:<8} {row['threads']:>7} {case:<16} {variant:<16} {row['images_per_s']:>9.1f} "
              f"{row['images_per_cpu_s']:>9.1f} {' '.join(ratios)} {row['peak_memory_mb']:>8.0f}")
    print(f"wrote {args.out}")
    if failures:
        sys.exit(1)


def _rate(row: dict) -> str:
    """The rate that ranks and compares measurements: per CPU second on the CPU, per wall second on CUDA."""
    return "images_per_s" if row["device"].startswith("cuda") else "images_per_cpu_s"


def _write_report(args: argparse.Namespace, best: dict[tuple[int, str, int, str, str], dict],
                  failures: list[dict]) -> None:
    """The JSON report of the cases measured so far, each with its ratio (:func:`_rate`) to the bare loop of its
    size and preset and to the same case with the default options."""
    import torch

    from bioaug.provenance import write_json_atomic

    for (size, preset, threads, case, _variant), row in best.items():
        for key, baseline in (("ratio_to_minimal", best.get((size, preset, threads, "minimal", "default"))),
                              ("ratio_to_default", best.get((size, preset, threads, case, "default")))):
            row[key] = round(row[_rate(row)] / baseline[_rate(row)], 3) if baseline else None
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "load_average": os.getloadavg(), "repeats": args.repeats,
              "bf16_kernels": bool(torch.backends.mkldnn.is_available()
                                   and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
              "device": args.device, "results": list(best.values()), "failures": failures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)

if __name__ == "__main__":
    main()
