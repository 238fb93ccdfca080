"""bioaug evaluate --external: every classifier also tested on another cohort's store, never trained on it."""
from __future__ import annotations

import json

import pytest

from bioaug.cli import main
from bioaug.config import build_config
from bioaug.errors import ConfigError
from bioaug.evaluate import protocol
from bioaug.evaluate.config import EvaluateConfig

from conftest import make_disc_store
from test_protocol import TINY

SMALL = {**TINY, "budgets": [1.0], "seeds": [0, 1], "arms": ["real", "classic", "classic+synthetic", "colour"]}


@pytest.fixture
def hospital_b(tmp_path):
    """Another cohort: the same three classes on slides of its own (other names, other random draws)."""
    return make_disc_store(tmp_path / "hospital-b", seed=7, slide_prefix="b-slide", per_class=12)


def test_external_section_is_written_and_adding_it_later_trains_nothing(disc_store, hospital_b, tmp_path,
                                                                        monkeypatch):
    out = tmp_path / "eval"
    protocol.run_evaluation(disc_store, out, build_config(EvaluateConfig, SMALL), progress=False)
    results = out / "work" / "fold-0" / "draw-0" / "budget-1.00" / "results"
    before = {path.name: path.stat().st_mtime_ns for path in results.iterdir()}
    [checkpoint] = (out / "work" / "fold-0" / "draw-0" / "budget-1.00").glob("gan-*/checkpoint.pt")
    trained = checkpoint.stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(protocol, "train_classifier", refuse)
    config = build_config(EvaluateConfig, {**SMALL, "external": {"hospital-b": str(hospital_b.path)}})
    protocol.run_evaluation(disc_store, out, config, progress=False)
    after = {path.name: path.stat().st_mtime_ns for path in results.iterdir()}
    assert {name: after[name] for name in before} == before  # no result rewritten
    assert checkpoint.stat().st_mtime_ns == trained  # the finished GAN was not trained further
    added = sorted(set(after) - set(before))
    assert added == sorted(f"{arm}-seed-{seed}.external-hospital-b.json" for arm in SMALL["arms"] for seed in (0, 1))
    report = json.loads((out / "report.json").read_text())
    external = report["external"]["hospital-b"]
    assert len(external["runs"]) == len(SMALL["arms"]) * 2 and external["absent_classes"] == []
    assert external["leakage"]["shared with labelled store"] == 0
    assert {c["reference"] for c in external["comparisons"]} == {"classic", "real"}
    assert all(summary["ci"] == "runs and test images" for summary in external["summaries"] if summary["metric"] == "macro_f1")
    text = (out / "report.md").read_text()
    assert "## External validation: hospital-b" in text and "internal_vs_external.png" in text
    assert (out / "internal_vs_external.png").stat().st_size > 0


def test_an_external_store_sharing_a_slide_is_refused_before_training(disc_store, tmp_path, capsys):
    shared = make_disc_store(tmp_path / "copy", seed=3)  # same slide names as the training store
    assert main(["evaluate", str(disc_store.path), "--out", str(tmp_path / "eval"), "--folds", "2",
                 "--external", f"copy={shared.path}", "--classifier-steps", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert "external copy" in error and "shares slide(s) with the labelled store" in error and "\n" not in error
    assert not (tmp_path / "eval" / "work" / "fold-0" / "draw-0" / "budget-0.10" / "results").exists()


def test_class_mismatch_needs_a_mapping(disc_store, tmp_path):
    other = make_disc_store(tmp_path / "other", seed=2, slide_prefix="o-", class_names=("tiny", "large", "pale"))
    values = {**SMALL, "external": {"other": str(other.path)}}
    with pytest.raises(ConfigError, match="class 'tiny' of .* is not a training class.*external_classes") as raised:
        protocol.run_evaluation(disc_store, tmp_path / "eval", build_config(EvaluateConfig, values), progress=False)
    assert "\n" not in str(raised.value)
    mapped = build_config(EvaluateConfig, {**values, "external_classes": {"tiny": "small"}})
    assert protocol.plan(disc_store, mapped, tmp_path / "plan")  # accepted with the mapping


def test_absent_classes_are_reported_as_absent(disc_store, tmp_path):
    two = make_disc_store(tmp_path / "two", seed=4, slide_prefix="t-", class_names=("small", "large"))
    config = build_config(EvaluateConfig, {**SMALL, "arms": ["real", "classic"], "seeds": [0],
                                           "external": {"two": str(two.path)}})
    out = protocol.run_evaluation(disc_store, tmp_path / "eval", config, progress=False)
    external = json.loads((out / "report.json").read_text())["external"]["two"]
    assert external["absent_classes"] == ["pale"]
    for run in external["runs"]:
        assert run["sensitivity"]["pale"] != run["sensitivity"]["pale"]  # NaN, not 0
    assert "lacks (left out of macro-F1, not counted as zeros): pale" in (out / "report.md").read_text()
