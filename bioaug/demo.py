"""``bioaug demo``: the pipeline on the built-in example slide, as a first run and a smoke test."""
from __future__ import annotations

import logging
from pathlib import Path

from .example import write_example_slide
from .tiling import TileConfig, tile

log = logging.getLogger("bioaug")

#: Example slide sizes in level-0 pixels at 0.25 µm/px (so tiling at 0.5 µm/px exercises the pyramid).
DEMO_SIZES = {"tiny": (1536, 1024), "small": (4096, 3072)}


def run_demo(out: Path, *, size: str = "small", workers: int = 2, progress: bool = True) -> Path:
    """Write the example slide under ``out`` and tile it with its annotated nuclei; returns the store path.

    Reruns reuse the slide and resume the store.
    """
    width, height = DEMO_SIZES[size]
    slide_path = out / f"example-{size}.tiff"
    nuclei_csv = slide_path.with_suffix(".nuclei.csv")
    if not (slide_path.is_file() and nuclei_csv.is_file()):
        log.info("writing the example slide %s (%d x %d px)", slide_path, width, height)
        write_example_slide(slide_path, width=width, height=height, seed=0, progress=progress)
    store_path = out / "store"
    config = TileConfig(label_by="points", labels=[str(nuclei_csv)], workers=workers)
    store = tile([slide_path], store_path, config, progress=progress)
    log.info("tiled %d patches into %s (QC picture in %s)", len(store), store_path, store_path / "qc")
    return store_path
