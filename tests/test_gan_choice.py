"""benchmarks/generator_choice.py at a tiny size: every variant trains for the budget and is judged."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
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
    panel = Image.open(out / "work" / "runs" / "plain" / "reals.png").width
    assert 3.5 * panel < sheet.width < 4.5 * panel  # the four variants' samples, and no panel of real patches


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_ema_stats_judges_each_run_with_both_kinds_of_batch_norm_statistics(tmp_path):
    from bioaug.gan import load_checkpoint, train
    from test_gan import tiny

    store = make_disc_store(tmp_path / "store")
    run = train(store, tmp_path / "run", tiny(steps=4, ema_stats="training"), progress=False)
    script = SCRIPT.with_name("ema_stats.py")
    spec = importlib.util.spec_from_file_location("ema_stats", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    argv = ["--runs", str(run), "--reference", str(store.path), "--classifier-steps", "3", "--samples-per-class",
            "8", "--batches", "3", "--out", str(out)]
    assert module.main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    assert [row["statistics"] for row in results["rows"]] == ["training", "standing"]
    assert results["batches"] == 3 and results["n_real"] == 24
    training, standing = results["rows"]
    assert training["steps"] == standing["steps"] == 4 and training["preset"] == "plain"
    assert training["fidelity"] != standing["fidelity"]  # the statistics change the samples
    # with ema_stats: training the checkpoint's EMA holds the training generator's statistics: reproduced here
    generators = module.sampling_generators(run, 3, 0)
    held = load_checkpoint(run / "checkpoint.pt")["generator_ema"]
    for name, tensor in generators["training"].state_dict().items():
        assert torch.equal(tensor, held[name]), name
    assert "| run | 4 | standing |" in (out / "results.md").read_text()
    assert Image.open(out / "ema_stats.png").width > 0
    assert list(results["provenance"]["inputs"]) == [str(run)] and "torch" in results["provenance"]["versions"]


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_generator_choice_builds_an_evaluation_cell_and_trains_only_the_named_variants(tmp_path):
    """``--cell``: the generator store is the evaluation's own (budget + pseudo-labelled pool, in its work
    directory), the judge sees the fold's training images only, and ``--only`` picks combinations by name."""
    from bioaug.store import PatchStore
    from conftest import make_pool_store

    store = make_disc_store(tmp_path / "store")
    pool = make_pool_store(tmp_path / "pool", store)
    profile = tmp_path / "profile.yaml"
    profile.write_text("folds: 2\nrun_folds: [0]\nbudgets: [0.5]\nseeds: [0]\narms: [classic, classic+synthetic]\n"
                       "pseudo_label_threshold: 0.0\nclassifier: {steps: 3, batch_size: 16}\n")
    cell_work, out = tmp_path / "evaluation" / "work", tmp_path / "out"
    common = ["--cell", str(profile), "--labelled", str(store.path), "--pool", str(pool.path), "--cell-work",
              str(cell_work), "--budget", "0.5", "--presets", "plain", "--unlabelled-modes", "ignore",
              "--lecam", "0", "0.3", "--options", "default", "d1", "--budget-s", "0.3",
              "--classifier-steps", "3", "--samples-per-class", "8", "--out", str(out), "--quiet",
              "--set", "channels=4", "max_channels=16", "batch_size=6", "z_dim=8", "log_every=1"]
    with pytest.raises(SystemExit, match="no variant resnet among plain, plain\\+d1, plain\\+lecam0.3,"):
        load_script().main([*common, "--only", "resnet"])
    assert not cell_work.exists()  # refused before the cell was built
    no_cell = r"no cell with fold 0, draw 0 and budget 0.3 \(cells: fold 0, draw 0, budget 50%\)"
    with pytest.raises(SystemExit, match=no_cell):
        load_script().main([*common[:9], "0.3", *common[10:], "--only", "plain"])
    assert load_script().main([*common, "--only", "plain+lecam0.3+d1", "plain"]) == 0

    results = json.loads((out / "results.json").read_text())
    assert [row["name"] for row in results["variants"]] == ["plain+lecam0.3+d1", "plain"]
    fast, plain = (row["training"]["config"] for row in results["variants"])
    assert (fast["d_steps"], fast["lecam"]) == (1, 0.3)
    assert (plain["d_steps"], plain["lecam"]) == (2, 0.0)
    assert results["cell"] == {"profile": str(profile), "fold": 0, "draw": 0, "budget": 0.5}
    gan_store = PatchStore(results["store"])
    assert gan_store.path == cell_work / "fold-0" / "draw-0" / "budget-0.50" / "gan-store"
    assert (gan_store.labels == -1).sum() == 0 and len(gan_store) > len(store) // 4  # budget + pseudo-labelled
    splits = json.loads((cell_work.parent / "splits.json").read_text())
    reference = PatchStore(results["reference"])
    test_slides = {slide for slide, fold in splits["fold_of"].items() if fold == 0}
    assert test_slides and not test_slides & set(map(str, reference.slides))
    assert set(map(str, reference.slides)) | test_slides == set(map(str, store.slides))
    assert not test_slides & set(map(str, gan_store.slides))
