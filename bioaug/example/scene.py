"""The scene of an example slide: its tissue layout and nuclei, drawn from one seed.

Everything here is in micrometres and independent of the pyramid level it is drawn at; ``rendering`` turns it
into pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import Field, Layout, region_field, smooth_noise, tissue_field
from .nuclei import Nuclei, describe_nuclei, place_nuclei


@dataclass(frozen=True)
class Scene:
    """Everything that defines the example slide, independent of the pyramid level it is drawn at."""

    width: int
    height: int
    mpp: float
    layout: Layout
    nuclei: Nuclei


def build_scene(width: int, height: int, mpp: float, grid_cell: int, seed: int) -> Scene:
    """Draw the fields and place the nuclei; ``grid_cell`` (level-0 px) sizes the nucleus lookup grid."""
    rng_tissue, rng_regions, rng_glands, rng_nuclei = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    extent = (height * mpp, width * mpp)
    tissue = tissue_field(rng_tissue, extent)
    regions = region_field(rng_regions, extent, tissue)
    # lumens of 15 to 40 µm in a pattern repeating every 1 mm (only visible where there is epithelium)
    glands = Field(smooth_noise(rng_glands, (512, 512), 5.0, periodic=True)[None], cell=2.0, periodic=True)
    layout = Layout(tissue, regions, glands)
    # everything so far depends on the physical extent only: the same extent at another µm/px is the same tissue
    yx_um, label = place_nuclei(rng_nuclei, layout, extent)
    nuclei = describe_nuclei(rng_nuclei, layout, yx_um, label, mpp, (height, width), grid_cell)
    return Scene(width, height, mpp, layout, nuclei)
