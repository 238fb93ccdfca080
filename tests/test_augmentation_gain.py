"""benchmarks/augmentation_gain.py: the copied report names paths relative to the repository and links no
figure of real patches."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "augmentation_gain.py"


def test_copied_report_paths_become_relative_to_the_repository(tmp_path):
    spec = importlib.util.spec_from_file_location("augmentation_gain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    repo = module.REPO
    (tmp_path / "report.json").write_text(json.dumps({"store": f"{repo.parent}/crc-bench/crc-store",
                                                      "config": f"{repo}/pipelines/crc-nuclei-quick.yaml"}))
    (tmp_path / "report.md").write_text(f"generator `{repo.parent}/crc-bench/evaluation/work/fold-0/gan-x`\n"
                                        "![budget_curves](budget_curves.png)\n![samples](samples.png)\n")
    (tmp_path / "samples.png").write_bytes(f"{repo}/".encode())  # pictures are left alone
    module.relative_paths(tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == {
        "store": "../crc-bench/crc-store", "config": "pipelines/crc-nuclei-quick.yaml"}
    # the figure of real patches is not committed (research-only data): its link says where it is instead
    assert (tmp_path / "report.md").read_text() == (
        "generator `../crc-bench/evaluation/work/fold-0/gan-x`\n![budget_curves](budget_curves.png)\n"
        "(samples.png, real patches beside synthetic ones, is in the report written at run time, not in the "
        "repository)\n")
    assert (tmp_path / "samples.png").read_bytes() == f"{repo}/".encode()
