"""Tiling throughput against OpenSlide's own decoding speed, on a real slide and a 50k x 50k example slide.

For each slide it measures, in the same run:
- the baseline: OpenSlide decoding every region the tiler plans, once, in one process (``read_region`` only);
- ``bioaug tile`` (detection mode) with 1 and with 2 worker processes.
Each measurement runs in a fresh subprocess so peak memory (max RSS, including worker processes) is its own.
Reported: patches/s, tissue megapixels/s (level-0 tissue area over wall time), peak memory, and the ratio of
tiling time to the baseline time. Results are printed and written as JSON.

    python benchmarks/tile_throughput.py                      # Aperio slide + 50k x 50k example
    python benchmarks/tile_throughput.py --example-size 8000  # quicker
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

REPO = Path(__file__).resolve().parents[1]
APERIO = REPO.parent / "shared" / "data" / "openslide-cmu-1-small-region" / "CMU-1-Small-Region.svs"


def peak_rss_mib() -> float:
    """Max resident set size of this process and of its finished children, in MiB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def measure_baseline(slide_path: str) -> dict:
    """Decode every planned region once with OpenSlide alone."""
    from bioaug.slides import Slide
    from bioaug.tiling import TileConfig, _plan_slide

    config = TileConfig(qc=False)
    with Slide(slide_path) as slide:
        plan = _plan_slide(slide, Path("unused"), config, None, "")
        regions = [region for job in plan.jobs for region in job.regions]
        level = plan.jobs[0].plan.level
        started = time.perf_counter()
        for region in regions:
            slide.read_region(level, region.x, region.y, region.width, region.height)
        seconds = time.perf_counter() - started
        tissue_fraction = float(plan.tissue.mean())
        width, height = slide.dimensions
    return {"seconds": seconds, "regions": len(regions), "peak_mib": peak_rss_mib(),
            "tissue_mpx": tissue_fraction * width * height / 1e6}


def measure_tiling(slide_path: str, workers: int) -> dict:
    from bioaug.tiling import TileConfig, tile

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        store = tile([slide_path], Path(tmp) / "store", TileConfig(workers=workers, qc=False), progress=False)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "patches": len(store), "peak_mib": peak_rss_mib()}


def in_subprocess(kind: str, slide: Path, workers: int = 1) -> dict:
    result = subprocess.run([sys.executable, __file__, "--one", kind, str(slide), str(workers)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_slide(slide: Path) -> dict:
    print(f"== {slide.name}", flush=True)
    baseline = in_subprocess("baseline", slide)
    row = {"slide": slide.name, "openslide_seconds": round(baseline["seconds"], 2),
           "regions": baseline["regions"], "tissue_mpx": round(baseline["tissue_mpx"], 1)}
    for workers in (1, 2):
        run = in_subprocess("tile", slide, workers)
        row[f"w{workers}"] = {
            "seconds": round(run["seconds"], 2), "patches": run["patches"],
            "patches_per_s": round(run["patches"] / run["seconds"], 1),
            "tissue_mpx_per_s": round(baseline["tissue_mpx"] / run["seconds"], 2),
            "peak_mib": round(run["peak_mib"], 1),
            "ratio_to_openslide": round(run["seconds"] / baseline["seconds"], 2)}
        print(f"  {workers} worker(s): {row[f'w{workers}']}", flush=True)
    row["speedup_2_vs_1"] = round(row["w1"]["seconds"] / row["w2"]["seconds"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--example-size", type=int, default=50_000, help="edge of the example slide in px")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bioaug-bench",
                        help="where the example slide is written (kept for reuse)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tile_throughput.json")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "SLIDE", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, slide, workers = args.one
        result = measure_baseline(slide) if kind == "baseline" else measure_tiling(slide, int(workers))
        print(json.dumps(result))
        return

    from bioaug.example import write_example_slide
    from bioaug.provenance import package_versions

    slides = []
    if APERIO.is_file():
        slides.append(APERIO)
    else:
        print(f"skipping the Aperio slide: {APERIO} is absent")
    example = args.workdir / f"example-{args.example_size}.tiff"
    if not example.is_file():
        print(f"writing the {args.example_size} px example slide to {example} ...", flush=True)
        started = time.perf_counter()
        write_example_slide(example, width=args.example_size, height=args.example_size, seed=0, progress=True)
        print(f"  written in {time.perf_counter() - started:.0f} s", flush=True)
    slides.append(example)
    rows = [bench_slide(slide) for slide in slides]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # other work on this shared machine skews the 1-vs-2 worker comparison: record how busy it was
    result = {"results": rows, "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
              "cpu_count": os.cpu_count(), "versions": package_versions()}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
