"""benchmarks/evaluate_dask.py: the same evaluation in one process and on a LocalCluster, timed, same numbers."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_disc_store, make_pool_store
from test_protocol import TINY

pytest.importorskip("distributed")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def patient_timeouts(patient_dask_timeouts):
    """Dask waits patiently (see conftest)."""


def test_both_ways_are_timed_from_nothing_and_write_the_same_numbers(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("evaluate_dask", BENCHMARKS / "evaluate_dask.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    store = make_disc_store(tmp_path / "store")
    pool = make_pool_store(tmp_path / "pool", store)
    monkeypatch.setattr(module, "crc_stores", lambda *args: (store, pool))
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({**TINY, "budgets": [1.0], "arms": ["real", "classic", "pseudo_label"]}))
    out = tmp_path / "ratio.json"

    assert module.main(["--work", str(tmp_path), "--config", str(profile), "--set", "seeds=[0, 1]",
                        "--scheduler", "local:2", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["same_numbers"] is True and results["overrides"] == ["seeds=[0, 1]"]
    assert set(results["seconds"]) == {"one process", "dask"} and all(s > 0 for s in results["seconds"].values())
    assert results["ratio_one_process_over_dask"] == pytest.approx(
        results["seconds"]["one process"] / results["seconds"]["dask"], rel=0.01)
    assert not list(tmp_path.glob("evaluate-dask-*"))  # the runs' directories are gone
