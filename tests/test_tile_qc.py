"""QC of a tiling run: the nucleus-density check and the upsampling warning, one line per slide."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from bioaug.example import write_example_slide
from bioaug.slides import Slide
from bioaug.tile import TileConfig, tile


@pytest.fixture
def bioaug_log(caplog):
    """Records of the 'bioaug' logger (which the CLI may have detached from the root logger)."""
    logger = logging.getLogger("bioaug")
    detached = not logger.propagate
    if detached:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="bioaug")
    yield caplog
    if detached:
        logger.removeHandler(caplog.handler)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example_slide(tmp_path_factory.mktemp("qc") / "example.tiff", width=1024, height=768, seed=3)


def rendered(example, path, haematoxylin: float):
    """The example slide's level 0 as a plain PNG with its haematoxylin optical density scaled."""
    from skimage.color import hed2rgb, rgb2hed

    with Slide(example.path) as slide:
        rgb = slide.read_region(0, 0, 0, example.width, example.height)
    hed = rgb2hed(rgb)
    hed[..., 0] *= haematoxylin
    Image.fromarray((np.clip(hed2rgb(hed), 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


def density_warnings(log) -> list[str]:
    return [r.getMessage() for r in log.records if "per mm² of tissue" in r.getMessage()]


def test_density_check_warns_on_a_weakly_stained_tile_only(example, tmp_path, bioaug_log):
    # 2% of the haematoxylin: nuclei are a grey level or two above the stroma, below the JPEG noise
    normal = rendered(example, tmp_path / "normal.png", 1.0)
    weak = rendered(example, tmp_path / "weak.png", 0.02)
    store = tile([normal, weak], tmp_path / "store", TileConfig(slide_mpp=example.mpp, qc=False), progress=False)
    warnings = density_warnings(bioaug_log)
    assert len(warnings) == 1 and warnings[0].startswith("weak.png:"), warnings
    qc = store.header.provenance["qc"]
    low, high = qc["plausible_nuclei_per_mm2"]
    assert low <= qc["nuclei_per_mm2"]["normal.png"] <= high
    assert qc["nuclei_per_mm2"]["weak.png"] < low
    assert qc["tissue_mm2"]["weak.png"] == pytest.approx(qc["tissue_mm2"]["normal.png"], rel=0.05)


def test_density_check_is_quiet_on_the_example_slide(example, tmp_path, bioaug_log):
    store = tile([example.path], tmp_path / "store", TileConfig(qc=False), progress=False)
    assert not density_warnings(bioaug_log)
    assert store.header.provenance["qc"]["nuclei_per_mm2"]["example.tiff"] > 0


def test_upsampling_warns_with_the_slide_and_its_factor(example, tmp_path, bioaug_log):
    config = TileConfig(mpp=0.125, region_size=256, min_tissue=0.0, qc=False)
    tile([example.path], tmp_path / "store", config, progress=False)
    warnings = [r.getMessage() for r in bioaug_log.records if "upsampled" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"{example.path}: ") and "2.00x" in warnings[0]


def test_upsampling_of_many_slides_is_one_line_with_their_count(example, tmp_path, bioaug_log):  # 19.10
    """CRCHistoPhenotypes' 100 images gave 100 identical lines."""
    others = [write_example_slide(tmp_path / f"other{seed}.tiff", width=512, height=512, seed=seed).path
              for seed in (4, 6, 7)]
    config = TileConfig(mpp=0.125, region_size=256, min_tissue=0.0, qc=False)
    tile([example.path, *others], tmp_path / "store", config, progress=False)
    warnings = [r.getMessage() for r in bioaug_log.records if "upsampled" in r.getMessage()]
    assert warnings == ["4 slides are coarser than --mpp 0.125, so their patches are upsampled: example.tiff "
                        "(2.00x), other4.tiff (2.00x), other6.tiff (2.00x) ..."]


def test_no_upsampling_warning_at_the_slides_resolution(example, tmp_path, bioaug_log):
    tile([example.path], tmp_path / "store", TileConfig(mpp=0.25, qc=False), progress=False)
    assert not [r for r in bioaug_log.records if "upsampled" in r.getMessage()]
