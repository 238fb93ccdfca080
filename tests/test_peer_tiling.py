"""benchmarks/peer_tiling.py without installing its peers: bioaug and the decode measured on a tiny example
slide in their own processes, the report written, and a peer that fails recorded without stopping the run."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def peer_tiling(monkeypatch, tmp_path):
    """The script with only a 1024 px example slide as input (the shared data left out, whatever is there)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports tile_throughput beside it
    spec = importlib.util.spec_from_file_location("peer_tiling", BENCHMARKS / "peer_tiling.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CRC", tmp_path / "no-crc")
    monkeypatch.setattr(module.throughput, "APERIO", tmp_path / "no-aperio.svs")
    return module


def _argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--example-dir", str(tmp_path),
            "--example-size", "1024", "--repeats", "1", *extra]


def test_bioaug_and_the_decode_side_by_side_with_a_report(peer_tiling, tmp_path):
    assert peer_tiling.main(_argv(tmp_path, "--skip-peers")) == 0

    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [item["name"] for item in result["inputs"]] == ["example-1024.tiff"]
    assert result["inputs"][0]["megapixels"] == pytest.approx(1024 * 1024 / 4 / 1e6)  # 0.25 -> 0.5 µm/px
    rows = {(row["tool"], row["task"], row["workers"]): row for row in result["rows"]}
    assert set(rows) == {("openslide", "decode", 1), ("bioaug", "points", 1), ("bioaug", "points", 2),
                         ("bioaug", "wholeslide", 1), ("bioaug", "wholeslide", 2)}
    assert rows["openslide", "decode", 1]["regions"] >= 1
    csv_lines = (tmp_path / "example-1024.nuclei.csv").read_text().strip().splitlines()
    for workers in (1, 2):  # every annotated nucleus gives a patch (edges padded), whatever the workers
        assert rows["bioaug", "points", workers]["patches"] == len(csv_lines) - 1
        assert rows["bioaug", "points", workers]["time_vs_bioaug"] == 1
    assert rows["bioaug", "wholeslide", 1]["patches"] == rows["bioaug", "wholeslide", 2]["patches"] > 0
    for row in rows.values():
        assert row["seconds"] > 0 and row["peak_mib"] >= row["import_mib"] > 0 and len(row["runs"]) == 1
        assert row["mp_per_s"] == pytest.approx(result["inputs"][0]["megapixels"] / row["seconds"])
        assert row["time_vs_decode"] == pytest.approx(row["seconds"] / rows["openslide", "decode", 1]["seconds"])
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| bioaug | wholeslide | example-1024.tiff | 2 | 1 |" in table
    assert "**histolab, wholeslide**" in table  # what each tool does is said even when it did not run
    assert (tmp_path / "out" / "peer_tiling.png").stat().st_size > 0


def test_a_failing_peer_is_recorded_and_the_run_goes_on(peer_tiling, tmp_path, monkeypatch):
    # the peers "installed" as this environment, which has neither: their imports fail in their processes
    monkeypatch.setattr(peer_tiling, "peer_python", lambda env, work: Path(sys.executable))
    monkeypatch.setattr(peer_tiling, "peer_versions", lambda env, python: {})
    monkeypatch.setattr(peer_tiling, "measurements", lambda item, with_peers: [
        ("openslide", "decode", 1), ("bioaug", "wholeslide", 1), ("histolab", "wholeslide", 1)])
    assert peer_tiling.main(_argv(tmp_path)) == 0

    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert "histolab" in rows[2]["error"] and "patches" not in rows[2]
    assert rows[1]["patches"] > 0
    assert f"| histolab | wholeslide | example-1024.tiff | 1 | 1 | {rows[2]['error']} |" in (
        tmp_path / "out" / "results.md").read_text()


def test_peers_share_several_images_between_two_processes(peer_tiling, tmp_path):
    images = peer_tiling.Input("images", tmp_path, [tmp_path / "a.png", tmp_path / "b.png"], ("decode", "points"))
    slide = peer_tiling.Input("slide", tmp_path / "s.tiff", [tmp_path / "s.tiff"], ("points", "wholeslide"))
    assert peer_tiling.measurements(images, with_peers=True) == [
        ("openslide", "decode", 1), ("bioaug", "points", 1), ("bioaug", "points", 2), ("tiatoolbox", "points", 1),
        ("tiatoolbox", "points", 2)]
    assert [run for run in peer_tiling.measurements(slide, with_peers=True) if run[0] != "bioaug"] == [
        ("tiatoolbox", "points", 1), ("histolab", "wholeslide", 1), ("tiatoolbox", "wholeslide", 1)]
    assert peer_tiling.measurements(slide, with_peers=False) == [
        ("bioaug", "points", 1), ("bioaug", "points", 2), ("bioaug", "wholeslide", 1), ("bioaug", "wholeslide", 2)]

    halves = [{"patches": 3, "seconds": 2.0, "cpu_seconds": 1.5, "peak_mib": 100.0, "import_mib": 50.0},
              {"patches": 4, "seconds": 3.0, "cpu_seconds": 2.5, "peak_mib": 80.0, "import_mib": 60.0}]
    assert peer_tiling.merged(halves, parallel=True) == {
        "patches": 7, "seconds": 3.0, "cpu_seconds": 4.0, "peak_mib": 100.0, "import_mib": 60.0}
    assert peer_tiling.merged(halves, parallel=False)["seconds"] == 5.0


def test_point_tables_by_file_name(peer_tiling, tmp_path):
    table = tmp_path / "points.csv"
    table.write_text("image,x,y,label\nimg1.png,1.5,2,a\nsub/img2.png,3,4,b\nimg1.png,5,6,a\n")
    assert peer_tiling.read_points(str(table)) == {"img1.png": [(1.5, 2.0), (5.0, 6.0)], "img2.png": [(3.0, 4.0)]}
