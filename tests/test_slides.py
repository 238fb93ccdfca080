"""Opening slides: truncated copies of every TIFF-based layout are refused with one clean line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from bioaug.errors import SlideError
from bioaug.slides import Slide
from conftest import shared_data

CUTS = (0.3, 0.5, 0.66, 0.8, 0.9, 0.99)


def _cut(source, tmp_path, fraction, suffix):
    data = source.read_bytes()
    cut = tmp_path / f"cut-{int(fraction * 100)}{suffix}"
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


def _tissue_like(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(60, 230, size=shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def svs():
    return shared_data("openslide-cmu-1-small-region", "CMU-1-Small-Region.svs")


@pytest.fixture(scope="module")
def bigtiff(tmp_path_factory):
    """A tiled BigTIFF pyramid whose levels are SubIFDs (the OME-TIFF layout), µm/px in its resolution tags."""
    path = tmp_path_factory.mktemp("big") / "pyramid.tif"
    base = _tissue_like((512, 512, 3))
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(base, tile=(128, 128), photometric="rgb", compression="zlib", subifds=1,
                  resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
        tif.write(base[::2, ::2], tile=(128, 128), photometric="rgb", compression="zlib", subfiletype=1)
    return path


def test_the_whole_svs_opens(svs):
    with Slide(svs) as slide:
        assert slide.dimensions == (2220, 2967) and slide.mpp == pytest.approx(0.499)


@pytest.mark.parametrize("fraction", CUTS)
def test_a_cut_svs_is_truncated_at_every_point(svs, tmp_path, fraction):
    """SVS writes each directory after its data: a cut copy loses pages instead of failing to parse."""
    with pytest.raises(SlideError, match="truncated"):
        Slide(_cut(svs, tmp_path, fraction, ".svs"), mpp=0.5)


@pytest.mark.parametrize("fraction", CUTS)
def test_a_cut_bigtiff_with_subifds_is_truncated(bigtiff, tmp_path, fraction):
    with pytest.raises(SlideError, match="truncated"):
        Slide(_cut(bigtiff, tmp_path, fraction, ".tif"), mpp=0.5)


def test_the_whole_bigtiff_opens(bigtiff):
    with Slide(bigtiff, mpp=0.5) as slide:
        assert slide.dimensions == (512, 512)


@pytest.mark.parametrize("fraction", (0.2, 0.6, 0.95))
def test_a_cut_example_pyramid_is_truncated(tmp_path, fraction):
    from bioaug.example import write_example_slide

    example = write_example_slide(tmp_path / "example.tiff", width=768, height=512, seed=2)
    with pytest.raises(SlideError, match="truncated"):
        Slide(_cut(example.path, tmp_path, fraction, ".tiff"))


def test_the_error_is_the_only_line_on_stderr(svs, tmp_path):
    """tifffile's log lines and PIL's warnings about the damage stay off the terminal."""
    cut = _cut(svs, tmp_path, 0.5, ".svs")
    result = subprocess.run([sys.executable, "-m", "bioaug.cli", "tile", str(cut), "--slide-mpp", "0.5",
                             "--out", str(tmp_path / "store")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"bioaug: error: {cut}: truncated: the file ends at {cut.stat().st_size} "
                                          "bytes but its TIFF structure points further (an incomplete copy?)"]
    assert not (tmp_path / "store").exists()


def test_rgba_on_white_composites_every_alpha_as_the_formula_and_leaves_the_input_alone():
    from bioaug.slides import rgba_on_white

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    rgba[:10, ..., 3] = 255  # opaque rows
    rgba[10:20, ..., 3] = 0  # outside the slide
    before = rgba.copy()
    alpha = rgba[..., 3:4].astype(np.int64)
    expected = (rgba[..., :3].astype(np.int64) * alpha + 255 * (255 - alpha)) // 255
    out = rgba_on_white(rgba)
    assert out.dtype == np.uint8 and out.shape == (40, 50, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)
    assert (out[10:20] == 255).all() and np.array_equal(out[:10], rgba[:10, ..., :3])
    np.testing.assert_array_equal(rgba, before)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    np.testing.assert_array_equal(rgba_on_white(opaque), opaque[..., :3])
