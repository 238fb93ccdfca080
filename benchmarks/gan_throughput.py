"""GAN training throughput: the bioaug trainer against a minimal hand-written loop of the same networks.

For each patch size, three cases run in separate processes (so each peak memory is its own):

- ``minimal``: the default networks, Adam and hinge loss on batches from an in-memory tensor; nothing else.
- ``trainer``: ``bioaug.gan.train`` with its defaults (class-balanced batches read from a store, adaptive
  augmentation, EMA, logging); its images/s is taken from ``log.jsonl`` after a warm-up interval, which
  excludes snapshot and checkpoint time as the trainer itself does.
- ``trainer+aug``: the same with every augmentation fixed at p = 0.5, the cost once ADA has raised p.

The ratio trainer / minimal is the trainer's overhead. Each case is repeated (interleaved with the others)
and the best kept, since other work on a shared machine only ever slows a measurement down. Peak memory is
the process's maximum resident set (``ru_maxrss``) on the CPU and ``torch.cuda.max_memory_allocated`` on
CUDA. Prints a table and writes ``benchmarks/results/gan_throughput.json``::

    python benchmarks/gan_throughput.py                 # 32 and 64 px, about 4 minutes on 2 CPU cores
    python benchmarks/gan_throughput.py --sizes 32 --threads 1 2 --repeats 3
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
CASES = ("minimal", "trainer", "trainer+aug")
#: Timed steps per patch size by default (after WARMUP steps), sized for a few minutes on 2 CPU cores.
DEFAULT_STEPS = {32: 20, 64: 10, 128: 10}
WARMUP = 5
CLASSES = 3


def _random_store(path: Path, patch_size: int, count: int = 192):
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


def _minimal(store, config, steps: int) -> tuple[float, object]:
    """Images/s of the bare loop: ``d_steps`` D updates and one G update per step, nothing else."""
    import torch

    from bioaug.gan.data import load_images
    from bioaug.gan.losses import discriminator_hinge_loss, generator_hinge_loss
    from bioaug.gan.networks import build_discriminator, build_generator

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
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

    def step() -> None:
        for _ in range(config.d_steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                with torch.no_grad():
                    fake = generator(torch.randn(batch, config.z_dim, device=device), labels)
                scores = discriminator(torch.cat([real, fake]), torch.cat([labels, labels])).float()
            loss_d = discriminator_hinge_loss(*scores.chunk(2))
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

    for _ in range(WARMUP):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start), device


def _trainer(store, config, steps: int, run: Path) -> tuple[float, object]:
    """Images/s of ``bioaug.gan.train`` from its log, leaving out the first (warm-up) interval."""
    import dataclasses

    import torch

    from bioaug.gan import train

    config = dataclasses.replace(config, steps=WARMUP + steps, log_every=WARMUP, snapshot_every=WARMUP + steps,
                                 checkpoint_every=WARMUP + steps)
    train(store, run, config, progress=False)
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    logged = [(line["step"], line["images_per_s"]) for line in lines if "images_per_s" in line]
    images = [(step - previous) * config.batch_size for (previous, _), (step, _) in zip(logged, logged[1:])]
    seconds = sum(count / rate for count, (_, rate) in zip(images, logged[1:]))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return sum(images) / seconds, device


def run_case(case: str, size: int, steps: int, threads: int) -> dict:
    """One measurement, in this process."""
    import torch

    from bioaug.gan import TrainConfig

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = _random_store(Path(tmp) / "store", size)
        config = TrainConfig(ada=case != "trainer+aug", augment_p=0.5 if case == "trainer+aug" else 0.0,
                             seed=0).resolve(size)
        if case == "minimal":
            rate, device = _minimal(store, config, steps)
        else:
            rate, device = _trainer(store, config, steps, Path(tmp) / "run")
        return {"size": size, "case": case, "images_per_s": round(rate, 1), "steps": steps,
                "batch_size": config.batch_size, "device": str(device), "threads": torch.get_num_threads(),
                "peak_memory_mb": round(_peak_memory_mb(device), 1),
                "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "max_rss"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default by size)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch thread counts to measure; 0 = torch's choice (default: 1, the fastest on a "
                             "shared 2-core machine, where 2 threads can be several times slower)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best is reported")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # a child process: measure one case and print it
        print(json.dumps(run_case(args.case, args.sizes[0], args.steps, args.threads[0])))
        return
    best: dict[tuple[int, int, str], dict] = {}
    for size in args.sizes:
        steps = args.steps or DEFAULT_STEPS.get(size, 10)
        for threads in args.threads:
            for _ in range(args.repeats):  # interleaved, so a burst of load from elsewhere hits every case alike
                for case in CASES:
                    child = subprocess.run([sys.executable, __file__, "--case", case, "--sizes", str(size),
                                            "--steps", str(steps), "--threads", str(threads)],
                                           check=True, capture_output=True, text=True)
                    row = json.loads(child.stdout.strip().splitlines()[-1])
                    print(f"  {size} px, {row['threads']} thread(s), {case}: {row['images_per_s']} images/s",
                          file=sys.stderr)
                    key = (size, threads, case)
                    if key not in best or row["images_per_s"] > best[key]["images_per_s"]:
                        best[key] = row
    results = list(best.values())
    print(f"{'size':>5} {'threads':>7} {'case':<12} {'images/s':>9} {'vs minimal':>10} {'peak MB':>8}")
    for (size, threads, case), row in best.items():
        row["ratio_to_minimal"] = round(row["images_per_s"] / best[(size, threads, "minimal")]["images_per_s"], 3)
        print(f"{size:>5} {row['threads']:>7} {case:<12} {row['images_per_s']:>9.1f} "
              f"{row['ratio_to_minimal']:>10.2f} {row['peak_memory_mb']:>8.0f}")
    import torch

    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "load_average": os.getloadavg(), "repeats": args.repeats,
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
