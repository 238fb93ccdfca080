"""benchmarks/generator_choice.py at a tiny size: every variant trains for the budget and is judged."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bioaug.store import StoreWriter
from conftest import make_disc_store

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "generator_choice.py"


def load_script():
    spec = importlib.util.spec_from_file_location("generator_choice", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 24 samples in a wider feature space
def test_generator_choice_compares_presets_with_and_without_unlabelled_rows(tmp_path):
    store = make_disc_store(tmp_path / "store")
    pool_writer = StoreWriter(tmp_path / "pool", store.header)
    pool_images = store.images(np.arange(0, len(store), 3))[:, ::-1].copy()  # new nuclei (flipped) ...
    pool_images[:2] = store.images(np.arange(2))  # ... and two the store holds already, which stay out
    pool_writer.write_shard("pool", pool_images, [{"slide": "slide0", "x": float(i), "y": 0.0}
                                                  for i in range(len(pool_images))], input_key="pool")
    pool = pool_writer.finalize()
    out = tmp_path / "out"
    argv = ["--store", str(store.path), "--unlabelled", str(pool.path), "--presets", "plain", "resnet",
            "--budget-s", "0.5", "--classifier-steps", "3", "--samples-per-class", "8", "--out", str(out),
            "--quiet", "--jobs", "2", "--budget-clock", "cpu", "--set", "channels=4", "max_channels=16", "batch_size=6", "z_dim=8", "log_every=1"]
    assert load_script().main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    names = [row["name"] for row in results["variants"]]
    assert names == ["plain", "plain+unlabelled", "resnet", "resnet+unlabelled"]
    assert results["unlabelled_rows"] == len(pool) - 2 and results["n_real"] == 24
    for row in results["variants"]:
        assert row["training"]["steps"] >= 1 and row["training"]["train_seconds"] >= 0.5
        assert row["training"]["config"]["time_budget"] == 0.5
        assert row["training"]["config"]["budget_clock"] == "cpu"
        assert 0 <= row["fidelity"]["two_sample_accuracy"] <= 1 and row["fidelity"]["n_synthetic"] == 24
        assert set(row["diversity"]) == set(results["class_names"])
        assert all(0 <= row["selection_kept"][n] <= 8 for n in results["class_names"])
    assert results["variants"][1]["training"]["config"]["unlabelled"] == "discriminator"
    assert "| resnet+unlabelled |" in (out / "results.md").read_text()
    sheet = Image.open(out / "generator_choice.png")
    assert sheet.width > 5 * Image.open(out / "work" / "runs" / "plain" / "reals.png").width * 0.9
