"""torch's thread pool beside other work: which setting keeps a job fast when the cores are not all its own?

``make demo`` took 12 min 48 s instead of 1 min 47 s beside two one-thread training processes on two cores:
seven times slower where a fair share of the cores would make it about twice as slow. One suspect is the
OpenMP pool waiting for its threads by spinning: a thread that finishes its part of a parallel region burns
its time slice waiting for a partner that the scheduler has given to another process.

This measures one fixed piece of work, the classifier's training step (``resnet10-w0.5``, 64 patches of
32 px, forward, backward and Adam), in a fresh process per setting, each setting several times in turns:

- ``threads-N``: OpenMP's default waiting (spin, then sleep), ``N`` threads (bioaug's default is the
  CPUs available to the process, ``bioaug.cpus.available_cpus``);
- ``threads-N-passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once);
- ``threads-N-spin10k``: the same with ``GOMP_SPINCOUNT=10000`` (GNU OpenMP spins 10,000 times instead of
  300,000 before it sleeps);
- ``threads-1``: one thread.

beside ``--busy`` processes of one thread each doing the same kind of work without end (0: a quiet machine,
apart from whatever else runs on it). Wall time per step (median of the turns), and each setting's time as a
ratio to ``threads-N``'s measured in the same run. Writes ``--out`` (JSON) and prints a table::

    python benchmarks/busy_threads.py --busy 2 --out benchmarks/results/busy_threads-busy2.json
    python benchmarks/busy_threads.py --busy 0 --out benchmarks/results/busy_threads-quiet.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORK = """
import sys, time, torch
from bioaug.classify.networks import build_network
torch.manual_seed(0)
network = build_network("resnet10-w0.5", 4)
optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 4, (64,))
steps = int(sys.argv[1])
def step():
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(network(images), labels).backward()
    optimizer.step()
for _ in range(2):  # warm-up
    step()
if steps == 0:  # a busy neighbour: work until killed
    while True:
        step()
started = time.perf_counter()
for _ in range(steps):
    step()
print(torch.get_num_threads(), (time.perf_counter() - started) / steps)
"""


def settings(threads: int) -> dict[str, dict[str, str]]:
    """Environment of each setting: name -> variables."""
    return {f"threads-{threads}": {"OMP_NUM_THREADS": str(threads)},
            f"threads-{threads}-passive": {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"},
            f"threads-{threads}-spin10k": {"OMP_NUM_THREADS": str(threads), "GOMP_SPINCOUNT": "10000"},
            "threads-1": {"OMP_NUM_THREADS": "1"}}


def run(variables: dict[str, str], steps: int) -> tuple[int, float]:
    """torch's thread count and the seconds per training step in a fresh process with ``variables`` set."""
    ours = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    env = {key: value for key, value in os.environ.items() if key not in ours}
    done = subprocess.run([sys.executable, "-c", WORK, str(steps)], env={**env, **variables}, check=True,
                          capture_output=True, text=True)
    threads, seconds = done.stdout.split()[-2:]
    return int(threads), float(seconds)


def main(argv: list[str] | None = None) -> int:
    from bioaug.cpus import available_cpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=2, help="one-thread busy processes beside the measurement")
    parser.add_argument("--threads", type=int, default=available_cpus(), help="N (default: the CPUs available)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per measurement")
    parser.add_argument("--turns", type=int, default=3, help="measurements of each setting, in turns")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    neighbours = [subprocess.Popen([sys.executable, "-c", WORK, "0"], env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   stdout=subprocess.DEVNULL) for _ in range(args.busy)]
    try:
        time.sleep(5 if neighbours else 0)  # let them start working
        chosen = settings(args.threads)
        seconds: dict[str, list[float]] = {name: [] for name in chosen}
        threads: dict[str, int] = {}
        for turn in range(args.turns):
            for name, variables in chosen.items():
                threads[name], step = run(variables, args.steps)
                seconds[name].append(step)
                print(f"turn {turn + 1}/{args.turns} {name}: {seconds[name][-1]:.3f} s/step", flush=True)
    finally:
        for neighbour in neighbours:
            neighbour.kill()
    baseline = statistics.median(seconds[f"threads-{args.threads}"])
    results = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "busy": args.busy, "threads": args.threads,
               "available_cpus": available_cpus(), "load_average": os.getloadavg()[0], "steps": args.steps,
               "settings": {name: {"env": chosen[name], "torch_threads": threads[name], "seconds_per_step": values,
                                   "median": statistics.median(values),
                                   "ratio_to_default": statistics.median(values) / baseline}
                            for name, values in seconds.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'setting':<22} s/step (median)  ratio to threads-{args.threads}   ({args.busy} busy processes)")
    for name, row in results["settings"].items():
        print(f"{name:<22} {row['median']:>14.3f}  {row['ratio_to_default']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
