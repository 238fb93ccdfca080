"""benchmarks/busy_threads.py: every setting runs in its own process with its own thread count."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "busy_threads.py"


def test_each_setting_is_measured_with_its_threads_beside_a_busy_process(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("busy_threads", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "busy.json"
    assert module.main(["--busy", "1", "--threads", "2", "--steps", "1", "--turns", "1", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results["settings"]) == ["threads-2", "threads-2-passive", "threads-2-spin10k", "threads-1"]
    assert results["settings"]["threads-2"]["ratio_to_default"] == 1.0
    assert results["settings"]["threads-2-passive"]["env"] == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    assert [row["torch_threads"] for row in results["settings"].values()] == [2, 2, 2, 1]
    assert all(row["median"] > 0 for row in results["settings"].values())
    assert "threads-1" in capsys.readouterr().out
