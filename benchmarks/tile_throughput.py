"""Tiling throughput against OpenSlide's own decoding speed, on a real slide and large example slides.

For each slide it measures, in the same run:
- the baseline: OpenSlide decoding every region the tiler plans, once, in one process (``read_region`` only),
  and the nucleus detector's speed (megapixels/s at the target resolution) on up to three of those regions;
- ``bioaug tile`` (detection mode) with 1 and with 2 local worker processes, and on a Dask ``LocalCluster`` of
  2 single-threaded worker processes (``--scheduler local:2``, cluster start-up included).
Each measurement runs in a fresh subprocess so peak memory (max RSS, including worker processes) is its own.
Reported: patches/s, tissue megapixels/s (level-0 tissue area over wall time), peak memory, the ratio of
tiling time to the baseline time, and the speed-ups over one worker. Results are printed and written as JSON, with a picture beside it (``--replot`` redraws it).

    python benchmarks/tile_throughput.py                            # Aperio slide + 10k, 20k and 50k examples
    python benchmarks/tile_throughput.py --example-size 10000 20000 # quicker; memory at two sizes

``benchmarks/peer_tiling.py`` imports its measurements (the timing, the decode, the example slides).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from bioaug.tile import TileConfig

REPO = Path(__file__).resolve().parents[1]
APERIO = REPO.parent / "shared" / "data" / "openslide-cmu-1-small-region" / "CMU-1-Small-Region.svs"
#: Where example slides are written and kept for reuse (by this benchmark and by peer_tiling.py).
EXAMPLE_DIR = Path(tempfile.gettempdir()) / "bioaug-bench"


def peak_rss_mib() -> float:
    """Max resident set size of this process and of its finished children, in MiB (Linux reports KiB).

    This process's own peak is Linux's high-water mark of its memory since it started this program: its
    ``ru_maxrss`` would also count the size of the process that started it, as it was before the exec."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    try:
        with open("/proc/self/status") as status:
            own = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(own, children) / 1024


def cpu_seconds() -> float:
    """User and system CPU seconds of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(work: Callable[[], dict]) -> dict:
    """What ``work`` returns, with its wall and CPU seconds, the peak memory once it is done and the memory
    before it started (``import_mib``: what the imports and any set-up held)."""
    import_mib, cpu = peak_rss_mib(), cpu_seconds()
    started = time.perf_counter()
    result = work()
    return {**result, "seconds": time.perf_counter() - started, "cpu_seconds": cpu_seconds() - cpu,
            "peak_mib": peak_rss_mib(), "import_mib": import_mib}


def _decode_planned(slide_path: str, config: "TileConfig"):
    """Plan the slide as the tiler does, then open it afresh and decode every planned region once with OpenSlide
    alone (plain images through PIL): the timing, the plan and its regions."""
    from bioaug.slides import Slide
    from bioaug.tile import SlideLabels
    from bioaug.tile.planning import plan_slide

    with Slide(slide_path, mpp=config.slide_mpp) as slide:
        plan = plan_slide(slide, Path("unused"), config, SlideLabels())
        width, height = slide.dimensions
    reads = [(job.plan.level, region) for job in plan.jobs for region in job.regions]
    regions = [region for _, region in reads]

    def decode() -> dict:
        with Slide(slide_path, mpp=config.slide_mpp) as slide:
            for level, region in reads:
                slide.read_region(level, region.x, region.y, region.width, region.height)
        return {"regions": len(regions), "chunks": len(plan.jobs),
                "decoded_mpx": sum(region.width * region.height for region in regions) / 1e6,
                "tissue_mpx": float(plan.tissue.mean()) * width * height / 1e6}

    return timed(decode), plan, regions


def measure_decode(slide_path: str, config: "TileConfig") -> dict:
    """OpenSlide's decoding of every region the tiler plans for ``config`` (opening the slide included)."""
    return _decode_planned(slide_path, config)[0]


def measure_baseline(slide_path: str) -> dict:
    """Decode every planned region once with OpenSlide alone; time the detector on up to three regions."""
    from bioaug.nuclei import detect_nuclei
    from bioaug.slides import Slide, resample
    from bioaug.tile import TileConfig

    config = TileConfig(qc=False)
    result, plan, regions = _decode_planned(slide_path, config)
    read = plan.jobs[0].plan
    detect_seconds = detect_mpx = 0.0
    with Slide(slide_path) as slide:
        for region in regions[:3]:
            rgb = slide.read_region(read.level, region.x, region.y, region.width, region.height)
            rgb = resample(rgb, read.scale) if read.scale != 1.0 else rgb
            started = time.perf_counter()
            detect_nuclei(rgb, mpp=config.mpp)
            detect_seconds += time.perf_counter() - started
            detect_mpx += rgb.shape[0] * rgb.shape[1] / 1e6
    return {**result, "peak_mib": peak_rss_mib(), "detection_mpx_per_s": detect_mpx / detect_seconds}


def measure_tiling(slides: list[str], config: "TileConfig", scratch: str | None = None) -> dict:
    """``bioaug tile`` of ``slides`` into a store in a temporary folder (under ``scratch``), timed."""
    from bioaug.tile import tile

    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        return timed(lambda: {"patches": len(tile(slides, Path(tmp) / "store", config, progress=False))})


def example_slide(size: int, workdir: Path = EXAMPLE_DIR) -> Path:
    """The ``size`` x ``size`` example slide (seed 0) under ``workdir`` with its nuclei CSV, written on first use."""
    from bioaug.example import write_example_slide

    example = workdir / f"example-{size}.tiff"
    if not example.is_file():
        print(f"writing the {size} px example slide to {example} ...", flush=True)
        started = time.perf_counter()
        write_example_slide(example, width=size, height=size, seed=0, progress=True)
        print(f"  written in {time.perf_counter() - started:.0f} s", flush=True)
    return example


def in_subprocess(kind: str, slide: Path, workers: int = 1) -> dict:
    result = subprocess.run([sys.executable, __file__, "--one", kind, str(slide), str(workers)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


#: The tiling runs of each slide: name, measurement kind, workers.
RUNS = (("w1", "tile", 1), ("w2", "tile", 2), ("dask2", "dask", 2))


def bench_slide(slide: Path) -> dict:
    print(f"== {slide.name}", flush=True)
    baseline = in_subprocess("baseline", slide)
    row = {"slide": slide.name, "openslide_seconds": round(baseline["seconds"], 2),
           "regions": baseline["regions"], "chunks": baseline["chunks"], "tissue_mpx": round(baseline["tissue_mpx"], 1),
           "detection_mpx_per_s": round(baseline["detection_mpx_per_s"], 2)}
    for name, kind, workers in RUNS:
        run = in_subprocess(kind, slide, workers)
        row[name] = {
            "seconds": round(run["seconds"], 2), "patches": run["patches"],
            "patches_per_s": round(run["patches"] / run["seconds"], 1),
            "tissue_mpx_per_s": round(baseline["tissue_mpx"] / run["seconds"], 2),
            "peak_mib": round(run["peak_mib"], 1),
            "ratio_to_openslide": round(run["seconds"] / baseline["seconds"], 2)}
        print(f"  {name}: {row[name]}", flush=True)
    row["speedup_2_vs_1"] = round(row["w1"]["seconds"] / row["w2"]["seconds"], 2)
    row["speedup_dask2_vs_1"] = round(row["w1"]["seconds"] / row["dask2"]["seconds"], 2)
    return row


def plot(result: dict, path: Path) -> None:
    """Seconds per slide for the OpenSlide baseline and each tiling run, with peak memory over the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["results"]
    names = ["OpenSlide decode"] + [name for name, _, _ in RUNS]
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.6), squeeze=False)
    for axis, row in zip(axes[0], rows):
        seconds = [row["openslide_seconds"]] + [row[name]["seconds"] for name, _, _ in RUNS]
        bars = axis.bar(names, seconds, color=["#999999", "#0072b2", "#56b4e9", "#e69f00"])
        for bar, name in zip(bars[1:], names[1:]):
            axis.annotate(f"{row[name]['peak_mib']:.0f} MiB", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=7)
        axis.set_title(f"{row['slide']}\n{row['chunks']} chunks, {row[names[1]]['patches']} patches", fontsize=9)
        axis.set_ylabel("seconds")
        axis.tick_params(axis="x", labelsize=7, rotation=20)
    load = ", ".join(map(str, result["load_average_1_5_15"]))
    fig.suptitle(f"bioaug tile: wall time and peak memory ({result['cpu_count']} cores, load {load})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--example-size", type=int, nargs="+", default=[10_000, 20_000, 50_000],
                        help="edge of the example slide(s) in px")
    parser.add_argument("--workdir", type=Path, default=EXAMPLE_DIR,
                        help="where the example slide is written (kept for reuse)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tile_throughput.json")
    parser.add_argument("--replot", action="store_true", help="only redraw the picture from --out")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "SLIDE", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, slide, workers = args.one
        if kind == "baseline":
            result = measure_baseline(slide)
        else:
            from bioaug.tile import TileConfig

            result = measure_tiling([slide], TileConfig(workers=int(workers), qc=False,
                                                        scheduler=f"local:{workers}" if kind == "dask" else None))
        print(json.dumps(result))
        return
    if args.replot:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return

    from bioaug.provenance import package_versions

    slides = []
    if APERIO.is_file():
        slides.append(APERIO)
    else:
        print(f"skipping the Aperio slide: {APERIO} is absent")
    slides += [example_slide(size, args.workdir) for size in args.example_size]
    rows = [bench_slide(slide) for slide in slides]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # other work on this shared machine skews the 1-vs-2 worker comparison: record how busy it was
    result = {"command": " ".join(sys.argv), "results": rows,
              "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
              "cpu_count": os.cpu_count(), "versions": package_versions()}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"written {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
