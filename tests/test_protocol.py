"""bioaug evaluate as a whole: planning, leakage refusal, bad configs and a tiny end-to-end run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bioaug.cli import main
from bioaug.config import build_config
from bioaug.errors import BioaugError, CheckpointError, ConfigError
from bioaug.evaluate import protocol
from bioaug.evaluate.config import EvaluateConfig
from bioaug.evaluate.report import REPORT_FILES
from bioaug.store import PatchStore

from conftest import make_disc_store

#: The smallest protocol that exercises every arm: one of two folds, two nested budgets, one seed.
TINY = dict(folds=2, run_folds=[0], budgets=[0.5, 1.0], seeds=[0], epochs=1, batch_size=16, gan_steps=5,
            gan_batch_size=16, synthetic_per_class=8)


@pytest.fixture
def no_training(monkeypatch):
    """Make any classifier or GAN training fail the test: for checks that must happen before training."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(protocol, "train_classifier", refuse)
    monkeypatch.setattr(protocol, "train_gan", refuse)


def _with_training_slides(path: Path, slides: list[str]) -> PatchStore:
    """A disc store posing as a synthetic store whose generator was trained on ``slides``."""
    store = make_disc_store(path, per_class=8, seed=1)
    header = json.loads((path / "store.json").read_text())
    header["provenance"]["training_slides"] = slides
    (path / "store.json").write_text(json.dumps(header))
    return store


def test_plan_keeps_slides_apart_and_budgets_nested(disc_store, tmp_path):
    config = EvaluateConfig(folds=2, budgets=[0.5, 1.0], arms=["real"])
    cells = protocol.plan(disc_store, config, tmp_path / "work")
    assert [(c.fold, c.budget) for c in cells] == [(0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0)]
    slides = disc_store.slides
    for cell in cells:
        assert not set(slides[cell.train]) & set(slides[cell.test]) and cell.test_slides == set(slides[cell.test])
        assert set(cell.train_store.slides) == set(slides[cell.train])
        assert cell.directory == tmp_path / "work" / f"fold-{cell.fold}" / f"budget-{cell.budget:.2f}"
    for small, large in ((cells[0], cells[1]), (cells[2], cells[3])):
        assert set(small.train) < set(large.train)


def test_ready_synthetic_store_from_a_test_slide_is_refused_before_training(disc_store, tmp_path, no_training):
    test_slide = sorted(protocol.plan(disc_store, EvaluateConfig(**TINY), tmp_path / "plan")[0].test_slides)[0]
    ready = _with_training_slides(tmp_path / "synthetic", [test_slide])
    config = EvaluateConfig(**{**TINY, "budgets": [1.0], "synthetic": {"0-1.0": str(ready.path)}})
    with pytest.raises(CheckpointError, match=f"test slide.*{test_slide}") as raised:
        protocol.run_evaluation(disc_store, tmp_path / "eval", config, progress=False)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "eval" / "work" / "fold-0" / "budget-1.00" / "results").exists()


def test_ready_synthetic_store_outside_the_budget_or_unrecorded_is_refused(disc_store, tmp_path, no_training):
    cell = protocol.plan(disc_store, EvaluateConfig(**TINY), tmp_path / "plan")[0]  # budget 0.5: one slide
    outside = sorted(set(disc_store.slides) - cell.test_slides - set(disc_store.slides[cell.train]))
    ready = _with_training_slides(tmp_path / "synthetic", outside)
    config = EvaluateConfig(**{**TINY, "budgets": [0.5], "synthetic": {"0-0.5": str(ready.path)}})
    with pytest.raises(CheckpointError, match="outside"):
        protocol.run_evaluation(disc_store, tmp_path / "eval", config, progress=False)
    unrecorded = make_disc_store(tmp_path / "unrecorded", per_class=8)
    config.synthetic = {"0-0.5": str(unrecorded.path)}
    with pytest.raises(CheckpointError, match="records no generator training slides"):
        protocol.run_evaluation(disc_store, tmp_path / "eval", config, progress=False)


def test_gan_run_of_another_split_in_the_work_directory_is_refused(disc_store, tmp_path, no_training):
    """A GAN run left at a cell's path but trained on other patches fails the store-hash check."""
    gan = tmp_path / "eval" / "work" / "fold-0" / "budget-1.00" / "gan"
    gan.mkdir(parents=True)
    (gan / "config.json").write_text(json.dumps({"inputs": {"store": str(disc_store.path),
                                                            "store_sha256": disc_store.content_hash}}))
    with pytest.raises(CheckpointError, match="test slide"):
        protocol.run_evaluation(disc_store, tmp_path / "eval", EvaluateConfig(**TINY), progress=False)


@pytest.mark.parametrize("values, message", [
    ({"network": "resnet9"}, "unknown network 'resnet9'"),
    ({"budgets": [0.1, 1.5]}, r"in \(0, 1\], got 1.5"),
    ({"synthetic": {"0-0.1": "/no/such/store"}}, "no patch store at /no/such/store"),
    ({"synthetic": {"7-0.1": "/no/such/store"}}, "names no evaluated cell"),
    ({"arms": ["real", "fancy"]}, "'fancy' is not one of"),
    ({"run_folds": [5]}, "fold 5 is not in 0..4"),
])
def test_bad_config_is_a_one_line_error(values, message):
    with pytest.raises(ConfigError, match=message) as raised:
        build_config(EvaluateConfig, values)
    assert "\n" not in str(raised.value)


def test_bad_config_on_the_command_line_stops_before_training(disc_store, tmp_path, capsys, no_training):
    for flags in (["--network", "resnet9"], ["--budgets", "0.5", "2"], ["--synthetic", "0-0.1=/nope"],
                  ["--group-by", "patient"]):
        assert main(["evaluate", str(disc_store.path), "--out", str(tmp_path / "eval"), *flags]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("bioaug: error:") and "\n" not in error, error


def test_tiny_evaluation_writes_every_report_file_and_resumes(disc_store, tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    config = tmp_path / "evaluate.yaml"
    config.write_text(json.dumps(TINY))
    assert main(["evaluate", str(disc_store.path), "--out", str(out), "--config", str(config), "--quiet"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    for name in REPORT_FILES.values():
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    runs = {(run["arm"], run["budget"]) for run in report["runs"]}
    assert runs == {(arm, budget) for arm in EvaluateConfig().arms for budget in (0.5, 1.0)}
    assert {row["reference"] for row in report["comparisons"]} == {"real", "classic"}
    assert all(record["shared with test"] == 0 for record in report["leakage"].values())
    assert len(report["fidelity"]) >= 2 and "Generator leakage check" in (out / "report.md").read_text()
    gan = json.loads((out / "work" / "fold-0" / "budget-0.50" / "gan" / "config.json").read_text())
    train_store = PatchStore(out / "work" / "fold-0" / "budget-0.50" / "train-store")
    assert gan["inputs"]["store_sha256"] == train_store.content_hash
    assert len(set(train_store.slides)) == 1  # half of the two training slides

    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")
    monkeypatch.setattr(protocol, "train_classifier", refuse)
    before = (out / "report.json").read_text()
    protocol.run_evaluation(disc_store, out, build_config(EvaluateConfig, TINY), progress=False)
    assert json.loads((out / "report.json").read_text())["summaries"] == json.loads(before)["summaries"]


def test_unlabelled_store_is_refused_before_training(tmp_path, no_training):
    store = make_disc_store(tmp_path / "store")
    store.labels = np.full(len(store), -1)
    with pytest.raises(BioaugError, match="unlabelled"):
        protocol.run_evaluation(store, tmp_path / "eval", EvaluateConfig(**TINY), progress=False)
