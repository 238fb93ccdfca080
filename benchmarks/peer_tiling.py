"""bioaug tile beside the tools a lab would otherwise use, on the same slides in one run, with OpenSlide's raw
decode as the limit.

Every tool cuts 64 px patches at 0.5 µm/px. The inputs: CRCHistoPhenotypes (100 images of 500 x 500 px at
0.55 µm/px, which the PNGs do not record, with the annotated nucleus centres of ``nuclei_labels.csv``), the
shared Aperio slide and the example slides at 10k, 20k and 50k px (0.25 µm/px, written by
``bioaug.example.write_example_slide`` with their nuclei CSV, kept in ``tile_throughput.EXAMPLE_DIR``). The tasks:

- ``points``, patches centred on given points (CRCHistoPhenotypes and the examples' nuclei): ``bioaug tile
  --label-by points --border constant`` against TIAToolbox's ``PointsPatchExtractor``. Same patches: both pad
  those that reach past an edge (bioaug with white, TIAToolbox with black).
- ``wholeslide``, nucleus patches over whole slides (the Aperio slide and the examples): bioaug detects every
  nucleus on tissue and centres a patch on it. Neither peer detects nuclei; the nearest each offers:
  histolab's ``ScoreTiler`` (a grid of tiles on its own tissue mask, ``TissueMask``, kept where at least 80% of
  a tile is tissue, each scored by its ``NucleiScorer``, all tiles kept) and TIAToolbox's
  ``SlidingWindowPatchExtractor`` (a grid of tiles wherever its Otsu tissue mask touches, no nucleus criterion).
  A grid tile is not a nucleus patch: the counts differ, and the table's MP/s compares the time to go through
  the same slide.
- ``decode``, the limit of bioaug's own plan: OpenSlide decoding, once, every region that bioaug's tiler plans to
  read (tissue regions with their halo, at the level it reads; PNGs through PIL), opening the slides included
  (``tile_throughput.measure_decode``). It is no limit for a tool that reads less: TIAToolbox reads only the
  patches around given points, and only the grid tiles on its tissue mask, so it can take less time than this.

What each tool does with a patch differs too: bioaug writes a patch store (compressed shards with labels, nucleus
features and provenance); histolab writes every tile as a PNG (its tilers' only output); TIAToolbox hands
each patch over as an array, which is counted and dropped. How each is told the resolution: bioaug by
``--mpp 0.5`` (and ``--slide-mpp 0.55`` for the PNGs); TIAToolbox by ``resolution=0.5, units="mpp"`` on a reader
given the slide's µm/px (``OpenSlideWSIReader`` for slides: its ``WSIReader.open`` takes a plain tiled TIFF for
an image and reads it whole into memory; ``WSIReader.open(png, mpp=(0.55, 0.55))`` for the PNGs), its points
scaled to the 0.5 µm/px frame as its extractor expects; histolab cannot resample without ``large_image``, so it
reads the pyramid level nearest 0.5 µm/px from above, with the tile edge that spans the same 32 µm (128 px at
0.25 µm/px on the examples, 64 px on the Aperio slide).

Measured for each: patches/s, MP/s (the input's area at 0.5 µm/px over wall seconds: one numerator per input
for every tool and task, so MP/s ratios are speed ratios), CPU seconds over wall seconds, peak memory (the
largest resident set of any one process, and what the imports alone held) and time relative to bioaug (same
task, input and workers) and to the decode. bioaug runs with 1 and 2 worker processes; the peers have no worker
option for these tools, so with 2 workers an input of several images is split between two processes of the
peer (time: the slower one), and a single slide runs in one. Each measurement runs in a fresh subprocess (bioaug
and the decode in this environment, each peer in its own), timing the work after the tool's module imports
(bioaug imports most of what it uses lazily, so those imports fall inside its time; the peers' do not); each
repeat runs every measurement once, interleaved, and the table gives medians. A measurement whose first run took
longer than ``--once-over`` seconds is not repeated, and one that passes ``--timeout`` is stopped and reported as
such.

The peers are installed from PyPI into their own virtual environments under ``--work`` (default
``../peer-bench``), on first use and again when the package lists below change:

- TIAToolbox 2.1.3 declares about forty dependencies (Jupyter, Bokeh, Sphinx, timm, transformers, torch < 2.13
  with torchvision, which from PyPI is a multi-GB CUDA build). Its patch extraction needs few of them, so it is
  installed ``--no-deps`` beside those, at versions within its own bounds, and ``torch==2.13.0`` (a CPU build
  where pip finds one, as from this machine's local wheels; elsewhere point pip at one with ``PIP_FIND_LINKS``)
  since ``tiatoolbox.utils`` imports torch. The ``tiatoolbox.tools`` package imports every tool on import
  (registration needs torchvision, which does not import beside that CPU torch; graph needs umap-learn), so the
  extractor module is loaded from its package folder without running that ``__init__``; its code is unchanged.
- histolab 0.7.0 pins numpy <= 1.24.4, scikit-image < 0.19.4 (no wheel for this Python) and openslide-python
  1.3.1 (no wheel, and it needs a system OpenSlide). It is installed ``--no-deps`` beside the nearest versions
  that install as wheels: numpy 1.24.4, scipy 1.10.0, scikit-image 0.20.0, Pillow 10, and openslide-python 1.4
  with openslide-bin.

    python benchmarks/peer_tiling.py                 # everything, 3 repeats -> docs/results/peer-tiling/
    python benchmarks/peer_tiling.py --quick         # 1 repeat; CRC, Aperio, 10k example -> ../peer-bench/quick
    python benchmarks/peer_tiling.py --skip-peers    # bioaug and the decode only (no install)

This file also runs inside the peers' environments (``--one``), so it imports nothing beyond the standard
library at module level, and neither does ``tile_throughput.py`` beside it.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable

import tile_throughput as throughput

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "peer-tiling"
CRC = REPO.parent / "shared" / "data" / "crchistophenotypes"
#: CRCHistoPhenotypes images are 20x (0.55 µm/px) and record no resolution (as in augmentation_gain.py).
CRC_MPP = 0.55
PATCH_SIZE = 64
MPP = 0.5
EXAMPLE_SIZES = (10_000, 20_000, 50_000)
#: The peers that do each task (the decode is OpenSlide's alone; bioaug does both tasks).
PEER_TASKS = {"points": ("tiatoolbox",), "wholeslide": ("histolab", "tiatoolbox")}
COLOURS = {"bioaug": "#0072b2", "histolab": "#e69f00", "tiatoolbox": "#009e73", "openslide": "#999999"}

#: What each tool did (and did not) in each task, for the report.
DESCRIPTIONS = {
    ("openslide", "decode"): "OpenSlide (PIL for PNGs) decodes every region bioaug plans to read for whole-slide "
                             "tiling, once; no resampling, no patches. The limit of bioaug's plan, not of a tool "
                             "that reads less of the slide",
    ("bioaug", "points"): "patches centred on the given points, resampled to 0.5 µm/px, edges padded white; "
                          "written to a patch store with labels and nucleus features",
    ("tiatoolbox", "points"): "PointsPatchExtractor: patches centred on the given points (scaled to the 0.5 µm/px "
                              "frame), read at 0.5 µm/px, edges padded black; arrays, nothing written",
    ("bioaug", "wholeslide"): "tissue mask, nucleus detection on every tissue region, a patch centred on each "
                              "nucleus at 0.5 µm/px; written to a patch store with nucleus features",
    ("histolab", "wholeslide"): "ScoreTiler: grid tiles on its TissueMask with at least 80% tissue, each scored "
                                "by NucleiScorer, all kept; the pyramid level at or finer than 0.5 µm/px, no "
                                "resampling (128 px at 0.25 µm/px on the examples); every tile written as a PNG; "
                                "no nucleus detection or centring",
    ("tiatoolbox", "wholeslide"): "SlidingWindowPatchExtractor: 64 px grid tiles at 0.5 µm/px wherever its Otsu "
                                  "tissue mask touches; arrays, nothing written; no nucleus criterion",
}


# ---- the peers' environments ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PeerEnv:
    """A peer's virtual environment: ``pip install`` argument lists run in order, and what to record."""

    name: str
    steps: tuple[tuple[str, ...], ...]
    versions_of: tuple[str, ...]


PEER_ENVS = {
    "tiatoolbox": PeerEnv("tiatoolbox", (
        # what tiatoolbox.tools.patchextraction and its readers import, within tiatoolbox's bounds; torch above
        # its bound (< 2.13.0) because 2.13.0 is the CPU build at hand
        ("torch==2.13.0", "numpy==2.4.3", "pandas==3.0.2", "shapely==2.1.2", "opencv-python-headless==4.14.0.94",
         "dask==2026.7.0", "joblib==1.5.2", "matplotlib==3.11.0", "psutil==7.2.2", "requests==2.34.1",
         "tifffile==2026.2.24", "pyyaml==6.0.2", "zarr==3.1.6", "scikit-image==0.26.0", "scipy==1.17.0",
         "tqdm==4.68.4", "pillow==12.1.1", "openslide-python==1.4.3", "openslide-bin==4.0.1.1",
         "simpleitk==2.5.4", "defusedxml==0.7.1", "imagecodecs==2026.1.14", "universal_pathlib==0.3.11",
         "filelock==3.28.0"),
        ("--no-deps", "tiatoolbox==2.1.3"),
    ), ("tiatoolbox", "torch", "numpy", "opencv-python-headless", "openslide-python", "openslide-bin")),
    "histolab": PeerEnv("histolab", (
        ("--no-deps", "histolab==0.7.0"),
        ("numpy==1.24.4", "scipy==1.10.0", "scikit-image==0.20.0", "pillow==10.4.0", "openslide-python==1.4.7",
         "openslide-bin==4.0.1.2", "certifi"),
    ), ("histolab", "numpy", "scikit-image", "pillow", "openslide-python", "openslide-bin")),
}


def peer_python(env: PeerEnv, work: Path) -> Path:
    """The Python of ``env``'s virtual environment under ``work``, created and installed on first use and again
    when its package list changed (the list is kept beside it)."""
    root = work / env.name
    python = root / "bin" / "python"
    stamp = root / "installed.json"
    wanted = json.dumps(env.steps)
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    if root.exists():
        if not (root / "pyvenv.cfg").is_file():
            raise SystemExit(f"{root} is in the way of {env.name}'s virtual environment and is not one")
        shutil.rmtree(root)
    print(f"installing {env.name} into {root} ...", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    for step in env.steps:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *step], check=True)
    stamp.write_text(wanted)
    print(f"  installed in {time.perf_counter() - started:.0f} s", flush=True)
    return python


def peer_versions(env: PeerEnv, python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, platform, sys; "
            "print(json.dumps({'python': platform.python_version(), "
            "**{n: m.version(n) for n in sys.argv[1:]}}))")
    result = subprocess.run([str(python), "-c", code, *env.versions_of], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


# ---- one measurement, in its own process ----------------------------------------------------------------------

def read_points(path: str) -> dict[str, list[tuple[float, float]]]:
    """Level-0 points of a ``slide,x,y,...`` (or ``image,...``) CSV by file name."""
    table: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            name = Path(row.get("slide") or row["image"]).name
            table.setdefault(name, []).append((float(row["x"]), float(row["y"])))
    return table


def merged(results: list[dict], parallel: bool) -> dict:
    """Several measurements as one: counts and CPU seconds add up; wall seconds add up when they ran one after
    the other and are the slowest one's when they ran side by side; memory is the largest process's."""
    total: dict[str, Any] = {key: sum(r[key] for r in results) for key in results[0]
                             if key not in ("seconds", "peak_mib", "import_mib")}
    seconds = [r["seconds"] for r in results]
    return {**total, "seconds": max(seconds) if parallel else sum(seconds),
            "peak_mib": max(r["peak_mib"] for r in results), "import_mib": max(r["import_mib"] for r in results)}


def bioaug_tile(spec: dict) -> dict:
    from bioaug.tile import TileConfig

    config = TileConfig(patch_size=PATCH_SIZE, mpp=MPP, slide_mpp=spec["slide_mpp"], workers=spec["workers"],
                        qc=False)
    if spec["task"] == "points":  # a patch for every point, edges padded, as TIAToolbox's extractor does
        config = dataclasses.replace(config, label_by="points", labels=[spec["labels"]], border="constant")
    return throughput.measure_tiling(spec["slides"], config, spec["scratch"])


def openslide_decode(spec: dict) -> dict:
    from bioaug.tile import TileConfig

    config = TileConfig(patch_size=PATCH_SIZE, mpp=MPP, slide_mpp=spec["slide_mpp"], qc=False)
    return merged([throughput.measure_decode(slide, config) for slide in spec["slides"]], parallel=False)


def _tiatoolbox() -> tuple[types.ModuleType, types.ModuleType]:
    """TIAToolbox's patch extraction and readers. The ``tiatoolbox.tools`` package imports every tool when
    imported (torchvision, umap-learn, ...), so it is stood in for by a bare package over the same folder, from
    which the extractor module loads unchanged."""
    import tiatoolbox

    tools = types.ModuleType("tiatoolbox.tools")
    tools.__path__ = [str(Path(tiatoolbox.__file__).parent / "tools")]
    sys.modules.setdefault("tiatoolbox.tools", tools)
    from tiatoolbox.tools import patchextraction
    from tiatoolbox.wsicore import wsireader

    # it logs a warning on every read that enlarges (the 0.55 µm/px PNGs), to the root logger it configures
    logging.getLogger().setLevel(logging.ERROR)
    return patchextraction, wsireader


def _tiatoolbox_reader(wsireader: types.ModuleType, path: str, slide_mpp: float | None):
    mpp = (slide_mpp, slide_mpp) if slide_mpp else None
    if Path(path).suffix.lower() == ".png":
        return wsireader.WSIReader.open(path, mpp=mpp)
    return wsireader.OpenSlideWSIReader(path, mpp=mpp)


def tiatoolbox_points(spec: dict) -> dict:
    import numpy as np

    patchextraction, wsireader = _tiatoolbox()

    def work() -> dict:
        table, patches = read_points(spec["labels"]), 0
        for path in spec["slides"]:
            points = table.get(Path(path).name)
            if not points:
                continue
            reader = _tiatoolbox_reader(wsireader, path, spec["slide_mpp"])
            # the extractor takes centres in the frame of the resolution it reads at
            centres = np.asarray(points) * float(reader.info.mpp[0]) / MPP
            extractor = patchextraction.PointsPatchExtractor(reader, centres, patch_size=(PATCH_SIZE, PATCH_SIZE),
                                                             resolution=MPP, units="mpp")
            patches += sum(1 for _ in extractor)
        return {"patches": patches}

    return throughput.timed(work)


def tiatoolbox_tiles(spec: dict) -> dict:
    patchextraction, wsireader = _tiatoolbox()

    def work() -> dict:
        patches = 0
        for path in spec["slides"]:
            extractor = patchextraction.SlidingWindowPatchExtractor(
                _tiatoolbox_reader(wsireader, path, spec["slide_mpp"]), patch_size=(PATCH_SIZE, PATCH_SIZE),
                stride=(PATCH_SIZE, PATCH_SIZE), resolution=MPP, units="mpp", input_mask="otsu")
            patches += sum(1 for _ in extractor)
        return {"patches": patches}

    return throughput.timed(work)


def histolab_level(path: str, slide_mpp: float | None) -> tuple[int, int]:
    """The coarsest pyramid level at least as fine as 0.5 µm/px and the tile edge there that spans the same
    field as a 64 px patch at 0.5 µm/px (histolab reads levels as they are)."""
    import openslide

    with openslide.OpenSlide(path) as slide:
        base = slide_mpp or float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
        downsamples = slide.level_downsamples
    level = max((level for level, down in enumerate(downsamples) if base * down <= MPP * 1.01), default=0)
    return level, round(PATCH_SIZE * MPP / (base * downsamples[level]))


def histolab_tiles(spec: dict) -> dict:
    from histolab.masks import TissueMask
    from histolab.scorer import NucleiScorer
    from histolab.slide import Slide
    from histolab.tiler import ScoreTiler

    def work() -> dict:
        patches = 0
        with tempfile.TemporaryDirectory(dir=spec["scratch"]) as tmp:
            for index, path in enumerate(spec["slides"]):
                out = Path(tmp) / str(index)
                slide = Slide(path, processed_path=str(out))
                level, size = histolab_level(path, spec["slide_mpp"])
                tiler = ScoreTiler(NucleiScorer(), tile_size=(size, size), n_tiles=0, level=level, check_tissue=True)
                tiler.extract(slide, extraction_mask=TissueMask(), log_level="ERROR")
                patches += sum(1 for _ in out.rglob("*.png"))
        return {"patches": patches}

    return throughput.timed(work)


MEASURES: dict[tuple[str, str], Callable[[dict], dict]] = {
    ("openslide", "decode"): openslide_decode,
    ("bioaug", "points"): bioaug_tile,
    ("bioaug", "wholeslide"): bioaug_tile,
    ("tiatoolbox", "points"): tiatoolbox_points,
    ("tiatoolbox", "wholeslide"): tiatoolbox_tiles,
    ("histolab", "wholeslide"): histolab_tiles,
}


# ---- the run --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Input:
    """One row group of the report: slides (one, or a set of images) and what is done with them."""

    name: str
    #: the slide, or the folder of the images
    source: Path
    slides: list[Path]
    tasks: tuple[str, ...]
    labels: Path | None = None
    slide_mpp: float | None = None
    megapixels: float = 0.0

    def measure_area(self) -> None:
        """The slides' area at 0.5 µm/px, the MP/s numerator of every measurement on them."""
        from bioaug.slides import Slide

        area = 0.0
        for path in self.slides:
            with Slide(path, mpp=self.slide_mpp) as slide:
                width, height = slide.dimensions
                area += width * height * (slide.mpp / MPP) ** 2
        self.megapixels = area / 1e6


def inputs(sizes: list[int], example_dir: Path) -> list[Input]:
    """CRCHistoPhenotypes and the Aperio slide where they are, then the example slides (written on first use)."""
    found = []
    if (CRC / "images").is_dir() and (CRC / "nuclei_labels.csv").is_file():
        found.append(Input("CRCHistoPhenotypes", CRC / "images", sorted((CRC / "images").glob("*.png")),
                           ("decode", "points"),
                           labels=CRC / "nuclei_labels.csv", slide_mpp=CRC_MPP))
    else:
        print(f"skipping CRCHistoPhenotypes: {CRC} has no images/ and nuclei_labels.csv")
    if throughput.APERIO.is_file():
        found.append(Input(throughput.APERIO.name, throughput.APERIO, [throughput.APERIO], ("decode", "wholeslide")))
    else:
        print(f"skipping the Aperio slide: {throughput.APERIO} is absent")
    for size in sizes:
        slide = throughput.example_slide(size, example_dir)
        found.append(Input(slide.name, slide, [slide], ("decode", "points", "wholeslide"),
                           labels=slide.with_name(f"{slide.stem}.nuclei.csv")))
    return found


def measurements(item: Input, with_peers: bool) -> list[tuple[str, str, int]]:
    """(tool, task, workers) of every measurement on ``item``: the decode, bioaug with 1 and 2 workers, and each
    peer with 1 process, and 2 where there are several images to share."""
    runs = []
    for task in item.tasks:
        if task == "decode":
            runs.append(("openslide", task, 1))
            continue
        runs += [("bioaug", task, 1), ("bioaug", task, 2)]
        for peer in PEER_TASKS[task] if with_peers else ():
            runs += [(peer, task, workers) for workers in (1, 2) if workers <= len(item.slides)]
    return runs


class MeasurementError(RuntimeError):
    pass


def run_processes(commands: list[list[str]], timeout: float) -> list[dict]:
    """Run ``commands`` side by side, each in its own session; the JSON each prints last. On a failure or past
    ``timeout`` seconds every one still running is stopped with its children."""
    with tempfile.TemporaryDirectory() as tmp:
        logs = [(Path(tmp) / f"{i}.out", Path(tmp) / f"{i}.err") for i in range(len(commands))]
        processes = []
        for command, (out, err) in zip(commands, logs):
            with open(out, "w") as stdout, open(err, "w") as stderr:
                processes.append(subprocess.Popen(command, stdout=stdout, stderr=stderr, start_new_session=True))
        deadline = time.monotonic() + timeout
        try:
            for process, (out, err) in zip(processes, logs):
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise MeasurementError(f"stopped after {timeout:g} s") from None
                if process.returncode:
                    tail = err.read_text().strip().splitlines()[-3:]
                    raise MeasurementError(f"exit {process.returncode}: " + " / ".join(tail))
            return [json.loads(out.read_text().strip().splitlines()[-1]) for out, _ in logs]
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def measure(python: Path, spec: dict, item: Input, timeout: float) -> dict:
    """One run of a measurement: in one process, or a peer's 2 processes sharing the images. Failures are
    recorded, not raised, so that one tool's trouble leaves the others' numbers."""
    if spec["tool"] in PEER_ENVS and spec["workers"] > 1:
        shares = [{**spec, "slides": spec["slides"][i::spec["workers"]]} for i in range(spec["workers"])]
    else:
        shares = [spec]
    commands = [[str(python), str(Path(__file__).resolve()), "--one", json.dumps(share)] for share in shares]
    try:
        return merged(run_processes(commands, timeout), parallel=True)
    except MeasurementError as exc:
        print(f"  {spec['tool']} {spec['task']} on {item.name}: {exc}", flush=True)
        return {"error": str(exc)}


def median_row(runs: list[dict]) -> dict:
    good = [run for run in runs if "error" not in run]
    if not good:
        return {"error": runs[0]["error"]}
    return {key: statistics.median(run[key] for run in good) for key in good[0]}


def summarise(rows: list[dict], items: list[Input]) -> None:
    """Rates and ratios on each row's medians: patches/s, MP/s, CPU/wall, time against bioaug and the decode."""
    area = {item.name: item.megapixels for item in items}
    seconds = {(row["tool"], row["task"], row["input"], row["workers"]): row.get("seconds") for row in rows}
    for row in rows:
        if "error" in row:
            continue
        row["patches_per_s"] = row["patches"] / row["seconds"] if "patches" in row else None
        row["mp_per_s"] = area[row["input"]] / row["seconds"]
        row["cpu_per_wall"] = row["cpu_seconds"] / row["seconds"]
        bioaug = seconds.get(("bioaug", row["task"], row["input"], row["workers"]))
        decode = seconds.get(("openslide", "decode", row["input"], 1))
        row["time_vs_bioaug"] = row["seconds"] / bioaug if bioaug else None
        row["time_vs_decode"] = row["seconds"] / decode if decode else None


def run_benchmark(items: list[Input], pythons: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    """Every measurement ``args.repeats`` times, interleaved within each repeat; one row per measurement."""
    plan = [(item, tool, task, workers) for item in items
            for tool, task, workers in measurements(item, with_peers=not args.skip_peers)]
    runs: dict[int, list[dict]] = {index: [] for index in range(len(plan))}
    scratch = args.work / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    for repeat in range(args.repeats):
        print(f"== repeat {repeat + 1} of {args.repeats}", flush=True)
        for index, (item, tool, task, workers) in enumerate(plan):
            done = runs[index]
            if done and ("error" in done[0] or done[0]["seconds"] > args.once_over):
                continue
            spec = {"tool": tool, "task": task, "workers": workers, "slides": [str(p) for p in item.slides],
                    "labels": str(item.labels) if item.labels else None, "slide_mpp": item.slide_mpp,
                    "scratch": str(scratch)}
            result = measure(pythons[tool], spec, item, args.timeout)
            done.append(result)
            if "error" not in result:
                count = f"{result['patches']} patches" if "patches" in result else f"{result['regions']} regions"
                print(f"  {item.name} {task} {tool} x{workers}: {result['seconds']:.1f} s, {count}, "
                      f"{result['peak_mib']:.0f} MiB", flush=True)
    rows = [{"tool": tool, "task": task, "input": item.name, "workers": workers, "runs": runs[index],
             **median_row(runs[index])} for index, (item, tool, task, workers) in enumerate(plan)]
    summarise(rows, items)
    return rows


# ---- the report -----------------------------------------------------------------------------------------------

def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown(result: dict) -> str:
    lines = [f"# Tiling against peers: {result['patch_size']} px patches at {result['mpp']} µm/px", "",
             f"`{result['command']}`: {result['repeats']} repeat(s), medians; {result['cpu_count']} cores, load "
             f"{', '.join(map(str, result['load_average_1_5_15']))} at the end. MP/s is the input's area at "
             f"{result['mpp']} µm/px over wall time; time ratios are against bioaug (same task, input and workers) "
             "and against the decode; peak MiB is the largest process, with what it held before the timed work "
             "(imports, and the decode's planning) in brackets.", "",
             "| tool | task | input | workers | runs | patches | patches/s | MP/s | CPU/wall | peak MiB (before) "
             "| time × bioaug | time × decode |", "|" + "---|" * 12]
    for row in result["rows"]:
        head = f"| {row['tool']} | {row['task']} | {row['input']} | {row['workers']} | {len(row['runs'])} |"
        if "error" in row:
            lines.append(f"{head} {row['error'].replace('|', '/')} |" + " |" * 6)
            continue
        count = row.get("patches", row.get("regions"))
        unit = "" if "patches" in row else " regions"
        lines.append(f"{head} {count:,.0f}{unit} | {_number(row['patches_per_s'])} | {_number(row['mp_per_s'], 2)} | "
                     f"{_number(row['cpu_per_wall'], 2)} | {row['peak_mib']:,.0f} ({row['import_mib']:,.0f}) | "
                     f"{_number(row['time_vs_bioaug'], 2)} | {_number(row['time_vs_decode'], 2)} |")
    lines += ["", "What each tool did:", ""]
    lines += [f"- **{tool}, {task}**: {text}." for (tool, task), text in DESCRIPTIONS.items()]
    lines += ["", "Inputs: " + "; ".join(f"{item['name']} ({item['slides']} slide(s), {item['megapixels']:.1f} MP "
                                         f"at {result['mpp']} µm/px)" for item in result["inputs"]) + ".", ""]
    versions = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in found.items())
                         for name, found in result["versions"].items())
    return "\n".join(lines + [f"Versions: {versions}.", ""])


def plot(result: dict, path: Path) -> None:
    """MP/s of every measurement per input (log scale), the decode as a dashed line: further right is faster."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    names = [item["name"] for item in result["inputs"]]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for axis, name in zip(axes[0], names):
        rows = [row for row in result["rows"] if row["input"] == name and "error" not in row]
        bars = [row for row in rows if row["tool"] != "openslide"]
        speeds = [row["mp_per_s"] for row in bars]
        drawn = axis.barh([f"{row['tool']} {row['task']} x{row['workers']}" for row in bars], speeds,
                          color=[COLOURS[row["tool"]] for row in bars])
        axis.bar_label(drawn, [f"{speed:.2g}" for speed in speeds], fontsize=7, padding=2)
        for row in rows:
            if row["tool"] == "openslide":
                axis.axvline(row["mp_per_s"], color=COLOURS["openslide"], linestyle="--", label="OpenSlide decode")
                axis.legend(fontsize=7, loc="best")
        axis.set_xscale("log")
        every = speeds + [row["mp_per_s"] for row in rows]
        if every:
            axis.set_xlim(min(every) / 3, max(every) * 3)
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.invert_yaxis()
        axis.set_xlabel(f"MP/s at {result['mpp']} µm/px")
        axis.set_title(name, fontsize=9)
        axis.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"Tiling speed, {result['patch_size']} px at {result['mpp']} µm/px ({result['cpu_count']} cores)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(result: dict, out: Path) -> None:
    """``results.json``, ``results.md`` and ``peer_tiling.png`` under ``out``, paths relative to the repository."""
    from augmentation_gain import relative_paths
    from bioaug.provenance import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", result)
    (out / "results.md").write_text(markdown(result))
    relative_paths(out)
    plot(result, out / "peer_tiling.png")
    print((out / "results.md").read_text())
    print(f"written {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO.parent / "peer-bench",
                        help="the peers' virtual environments and scratch space (default: ../peer-bench)")
    parser.add_argument("--out", type=Path, help="results folder (default: docs/results/peer-tiling, or "
                                                 "WORK/quick with --quick)")
    parser.add_argument("--example-size", type=int, nargs="+", default=list(EXAMPLE_SIZES),
                        help="edges of the example slides in px")
    parser.add_argument("--example-dir", type=Path, default=throughput.EXAMPLE_DIR,
                        help="where the example slides are written and kept")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--once-over", type=float, default=600.0,
                        help="a measurement whose first run took longer (seconds) is not repeated")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run is stopped")
    parser.add_argument("--quick", action="store_true", help="one repeat, and the 10k example as the only one")
    parser.add_argument("--skip-peers", action="store_true", help="bioaug and the decode only; installs nothing")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(MEASURES[spec["tool"], spec["task"]](spec)))
        return 0
    if args.quick:
        args.repeats, args.example_size = 1, [min(args.example_size)]
    out = args.out or (args.work / "quick" if args.quick else RESULTS)

    from bioaug.provenance import package_versions

    started = time.perf_counter()
    items = inputs(args.example_size, args.example_dir)
    for item in items:
        item.measure_area()
    pythons = {"bioaug": Path(sys.executable), "openslide": Path(sys.executable)}
    versions = {"bioaug": package_versions()}
    if not args.skip_peers:
        for env in PEER_ENVS.values():
            pythons[env.name] = peer_python(env, args.work)
            versions[env.name] = peer_versions(env, pythons[env.name])
    rows = run_benchmark(items, pythons, args)
    result = {"command": " ".join(["benchmarks/peer_tiling.py", *(argv if argv is not None else sys.argv[1:])]),
              "patch_size": PATCH_SIZE, "mpp": MPP, "repeats": args.repeats, "cpu_count": os.cpu_count(),
              "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
              "minutes": round((time.perf_counter() - started) / 60, 1),
              "inputs": [{"name": item.name, "slides": len(item.slides), "megapixels": item.megapixels,
                          "source": str(item.source)} for item in items],
              "descriptions": {f"{tool} {task}": text for (tool, task), text in DESCRIPTIONS.items()},
              "versions": versions, "rows": rows}
    write_results(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
