"""bioaug evaluate as a whole: planning, leakage refusal, bad configs and a tiny end-to-end run."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from bioaug.cli import main
from bioaug.config import build_config, config_to_dict
from bioaug.errors import BioaugError, CheckpointError, ConfigError
from bioaug.evaluate import generators, protocol
from bioaug.evaluate.config import EvaluateConfig
from bioaug.evaluate.report import REPORT_FILES
from bioaug.store import PatchStore

from conftest import make_disc_store, make_pool_store

#: The smallest protocol: one of two folds, two nested budgets, one seed, every arm that needs no pool.
TINY = dict(folds=2, run_folds=[0], budgets=[0.5, 1.0], seeds=[0],
            arms=["real", "classic", "synthetic", "selected", "classic+synthetic", "classic+selected",
                  "synthetic_only", "colour"],
            classifier={"steps": 8, "batch_size": 16}, generator={"steps": 5, "batch_size": 16},
            augment={"per_class": 8})


@pytest.fixture
def no_training(monkeypatch):
    """Make any classifier or GAN training fail the test: for checks that must happen before training."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(protocol, "train_classifier", refuse)
    monkeypatch.setattr(generators, "train_gan", refuse)


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
        assert cell.directory == tmp_path / "work" / f"fold-{cell.fold}" / "draw-0" / f"budget-{cell.budget:.2f}"
    for small, large in ((cells[0], cells[1]), (cells[2], cells[3])):
        assert set(small.train) < set(large.train)


def test_a_split_file_gives_every_store_of_the_same_slides_the_same_cells(tmp_path, no_training):
    small = make_disc_store(tmp_path / "small", per_class=24, patch_size=32, slides=6, seed=0)
    large = make_disc_store(tmp_path / "large", per_class=36, patch_size=48, slides=6, seed=5)
    config = EvaluateConfig(folds=3, budgets=[0.25, 1.0], budget_draws=[0, 1], arms=["real"],
                            splits=str(tmp_path / "splits.json"))
    first = protocol.plan(small, config, tmp_path / "a")
    assert (tmp_path / "splits.json").is_file() and not (tmp_path / "splits.json").with_suffix(".tmp").exists()
    second = protocol.plan(large, config, tmp_path / "b")
    assert [(c.fold, c.draw, c.budget) for c in first] == [(c.fold, c.draw, c.budget) for c in second]
    assert len(first) == 3 * 3  # budget 100% is the same cell in every draw: run once per fold
    for a, b in zip(first, second):
        assert a.test_slides == b.test_slides
        assert set(a.train_store.slides) == set(b.train_store.slides)
    fewer = make_disc_store(tmp_path / "fewer", slides=5)
    with pytest.raises(ConfigError, match="split.json|splits.json.*1 slide\\(s\\) of the split are not in") as error:
        protocol.plan(fewer, config, tmp_path / "c")
    assert "\n" not in str(error.value)


def test_view_larger_than_the_store_is_refused_before_training(disc_store, tmp_path, no_training, capsys):
    assert main(["evaluate", str(disc_store.path), "--out", str(tmp_path / "eval"), "--classifier-view", "48",
                 "--folds", "2", "--arms", "real"]) == 2
    error = capsys.readouterr().err.strip()
    assert "view of 48 px is larger than its 32 px patches" in error and str(disc_store.path) in error
    assert "\n" not in error and not (tmp_path / "eval").exists()


def test_ready_synthetic_store_from_a_test_slide_is_refused_before_training(disc_store, tmp_path, no_training):
    test_slide = sorted(protocol.plan(disc_store, EvaluateConfig(**TINY), tmp_path / "plan")[0].test_slides)[0]
    ready = _with_training_slides(tmp_path / "synthetic", [test_slide])
    config = EvaluateConfig(**{**TINY, "budgets": [1.0], "synthetic": {"0-1.0": str(ready.path)}})
    with pytest.raises(CheckpointError, match=f"test slide.*{test_slide}") as raised:
        protocol.run_evaluation(disc_store, tmp_path / "eval", config, progress=False)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "eval" / "work" / "fold-0" / "draw-0" / "budget-1.00" / "results").exists()


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
    gan = tmp_path / "eval" / "work" / "fold-0" / "draw-0" / "budget-1.00" / "gan-0123456789ab"
    gan.mkdir(parents=True)
    (gan / "config.json").write_text(json.dumps({"inputs": {"store": str(disc_store.path),
                                                            "store_sha256": disc_store.content_hash}}))
    with pytest.raises(CheckpointError, match="test slide"):
        protocol.run_evaluation(disc_store, tmp_path / "eval", EvaluateConfig(**TINY), progress=False)


@pytest.mark.parametrize("values, message", [
    ({"classifier": {"network": "resnet9"}}, "--classifier-network: 'resnet9' is not one of"),
    ({"synthetic_fraction": 1.5}, r"--synthetic-fraction: must lie in \[0, 1\], got 1.5"),
    ({"synthetic_fraction": -0.1}, r"--synthetic-fraction: must lie in \[0, 1\], got -0.1"),
    ({"arms": ["pseudo_label", "classic"]}, "needs an unlabelled store"),
    ({"unlabelled": "/no/such/store"}, "no patch store at /no/such/store"),
    ({"generator": {"steps": 0}}, "steps"),
    ({"classifier": 3}, "section 'classifier' must be a mapping"),
    ({"budgets": [0.1, 1.5]}, r"in \(0, 1\], got 1.5"),
    ({"synthetic": {"0-0.1": "/no/such/store"}}, "no patch store at /no/such/store"),
    ({"synthetic": {"7-0.1": "/no/such/store"}}, "names no evaluated cell"),
    ({"arms": ["real", "fancy"]}, "--arms: 'fancy' is not one of"),
    ({"run_folds": [5]}, "fold 5 is not in 0..4"),
])
def test_bad_config_is_a_one_line_error(values, message):
    with pytest.raises(ConfigError, match=message) as raised:
        build_config(EvaluateConfig, values)
    assert "\n" not in str(raised.value)


def test_a_group_column_the_store_lacks_names_the_flag_and_the_store(disc_store, tmp_path):
    with pytest.raises(ConfigError, match=r"^--group-by: .* has no manifest column 'patient'; columns: "):
        protocol.run_evaluation(disc_store, tmp_path / "eval", EvaluateConfig(**{**TINY, "group_by": "patient"}),
                                progress=False)
    assert not (tmp_path / "eval" / "work").exists()


def test_bad_config_on_the_command_line_stops_before_training(disc_store, tmp_path, capsys, no_training):
    for flags in (["--classifier-network", "resnet9"], ["--budgets", "0.5", "2"], ["--arms", "nope"],
                  ["--synthetic-fraction", "2"], ["--synthetic", "0-0.1=/nope"],
                  ["--group-by", "patient"]):
        assert main(["evaluate", str(disc_store.path), "--out", str(tmp_path / "eval"), *flags]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("bioaug: error:") and "\n" not in error, error


def test_tiny_evaluation_writes_every_report_file_and_resumes(disc_store, tmp_path, monkeypatch, capsys):
    train = protocol.train_classifier
    out = tmp_path / "eval"
    config = tmp_path / "evaluate.yaml"
    config.write_text(json.dumps(TINY))
    assert main(["evaluate", str(disc_store.path), "--out", str(out), "--config", str(config), "--quiet"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    for kind, name in REPORT_FILES.items():
        assert (out / name).is_file() == (kind != "external_figure"), name  # no external store given
    report = json.loads((out / "report.json").read_text())
    runs = {(run["arm"], run["budget"]) for run in report["runs"]}
    assert runs == {(arm, budget) for arm in TINY["arms"] for budget in (0.5, 1.0)}
    assert {row["reference"] for row in report["comparisons"]} == {"real", "classic"}
    network_runs = [run for run in report["runs"] if run["arm"] != "colour"]
    assert {run["steps"] for run in network_runs} == {8}  # the same optimisation budget in every arm
    for run in network_runs:
        mixed = run["arm"] in ("synthetic", "selected", "classic+synthetic", "classic+selected") and run["n_extra"]
        expected = {"real": 8, "extra": 8} if mixed else {"real": 16, "extra": 0}
        assert run["batch"] == expected, run["arm"]
        assert run["augmentation"] == ("geometric+stain" if run["arm"].startswith("classic") else "none")
    assert all(record["shared with test"] == 0 for record in report["leakage"].values())
    assert len(report["fidelity"]) >= 2 and "Generator leakage check" in (out / "report.md").read_text()
    assert "Main comparison" in (out / "report.md").read_text()
    [gan_run] = (out / "work" / "fold-0" / "draw-0" / "budget-0.50").glob("gan-*/config.json")
    gan = json.loads(gan_run.read_text())
    train_store = PatchStore(out / "work" / "fold-0" / "draw-0" / "budget-0.50" / "train-store")
    assert gan["inputs"]["store_sha256"] == train_store.content_hash
    assert len(set(train_store.slides)) == 1  # half of the two training slides

    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")
    monkeypatch.setattr(protocol, "train_classifier", refuse)
    before = (out / "report.json").read_text()
    protocol.run_evaluation(disc_store, out, build_config(EvaluateConfig, TINY), progress=False)
    assert json.loads((out / "report.json").read_text())["summaries"] == json.loads(before)["summaries"]

    # another generator by name: a new GAN beside the old one, and only the arms that use its patches retrain
    results = sorted((out / "work").glob("fold-0/draw-0/budget-*/results/*.json"))
    before = {path: path.stat().st_mtime_ns for path in results}
    retrained = []
    monkeypatch.setattr(protocol, "train_classifier", lambda *args, **kwargs: retrained.append(1) or train(
        *args, **kwargs))
    protocol.run_evaluation(disc_store, out, build_config(EvaluateConfig, {
        **TINY, "generator": {**TINY["generator"], "preset": "resnet"}}), progress=False)
    cell = out / "work" / "fold-0" / "draw-0" / "budget-0.50"
    presets = sorted(json.loads(path.read_text())["config"]["preset"] for path in cell.glob("gan-*/config.json"))
    assert presets == ["plain", "resnet"]
    changed = [path for path in results if path.stat().st_mtime_ns != before[path]]
    rewritten = {path.name.rsplit("-seed", 1)[0] for path in changed}
    # (selected arms retrain only when selection keeps other patches than before: their key is the content)
    assert {"synthetic", "classic+synthetic", "synthetic_only"} <= rewritten <= set(TINY["arms"]) - {
        "real", "classic", "colour"}
    assert len(retrained) == len(changed)


def test_unlabelled_store_is_refused_before_training(tmp_path, no_training):
    store = make_disc_store(tmp_path / "store")
    store.labels = np.full(len(store), -1)
    with pytest.raises(BioaugError, match="unlabelled"):
        protocol.run_evaluation(store, tmp_path / "eval", EvaluateConfig(**TINY), progress=False)


def _hashes(store: PatchStore) -> dict[str, str]:
    return {slide: f"hash-of-{slide}" for slide in sorted(set(store.slides))}


@pytest.fixture
def hashed_store(tmp_path) -> PatchStore:
    """The disc store with slide-file hashes recorded, as tiling records them."""
    slides = [f"slide{k}" for k in range(4)]
    return make_disc_store(tmp_path / "hashed", provenance={"inputs": {s: f"hash-of-{s}" for s in slides}})


def test_a_pool_holding_a_renamed_test_image_is_refused_before_training(hashed_store, tmp_path, no_training):
    test_slide = sorted(protocol.plan(hashed_store, EvaluateConfig(**TINY), tmp_path / "plan")[0].test_slides)[0]
    hashes = _hashes(hashed_store) | {"renamed": f"hash-of-{test_slide}"}
    hashes.pop(test_slide)
    pool = make_pool_store(tmp_path / "pool", hashed_store, rename={test_slide: "renamed"}, hashes=hashes)
    config = EvaluateConfig(**{**TINY, "unlabelled": str(pool.path)})
    with pytest.raises(ConfigError, match=f"renamed has the same content as labelled slide {test_slide}") as raised:
        protocol.run_evaluation(hashed_store, tmp_path / "eval", config, progress=False)
    assert "\n" not in str(raised.value) and not (tmp_path / "eval" / "work" / "fold-0" / "draw-0" / "budget-0.50" / "results").exists()


@pytest.mark.parametrize("kind, message", [("other slides", "slide.*the labelled store does not"),
                                           ("patch size", "has 24 px patches"),
                                           ("other content", "differs in content")])
def test_a_pool_of_other_slides_or_patch_size_is_a_one_line_error(hashed_store, tmp_path, no_training, kind,
                                                                  message, capsys):
    hashes = _hashes(hashed_store)
    if kind == "other slides":
        pool = make_pool_store(tmp_path / "pool", hashed_store, rename={"slide0": "elsewhere"})
    elif kind == "patch size":
        pool = make_pool_store(tmp_path / "pool", hashed_store, patch_size=24, hashes=hashes)
    else:
        pool = make_pool_store(tmp_path / "pool", hashed_store, hashes=hashes | {"slide1": "another file"})
    assert main(["evaluate", str(hashed_store.path), "--out", str(tmp_path / "eval"), "--unlabelled",
                 str(pool.path), "--folds", "2", "--classifier-steps", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert re.search(message, error) and "\n" not in error and str(pool.path) in error


def test_pseudo_label_at_a_budget_labelling_every_training_slide_has_an_empty_pool(hashed_store, tmp_path):
    """At 100% the pool is empty: pseudo_label then trains on the budget alone (it crashed on the empty pool)."""
    pool = make_pool_store(tmp_path / "pool", hashed_store, hashes=_hashes(hashed_store))
    config = EvaluateConfig(**{**TINY, "budgets": [1.0], "arms": ["classic", "pseudo_label"],
                               "unlabelled": str(pool.path)})
    out = protocol.run_evaluation(hashed_store, tmp_path / "eval", config, progress=False)
    cell = out / "work" / "fold-0" / "draw-0" / "budget-1.00"
    assert len(PatchStore(cell / "pool-store")) == 0
    result = json.loads((cell / "results" / "pseudo_label-seed-0.json").read_text())
    assert result["n_extra"] == 0 and result["batch"] == {"real": 16, "extra": 0}


def test_pseudo_label_trains_on_the_budget_and_the_pool_only(hashed_store, tmp_path):
    pool = make_pool_store(tmp_path / "pool", hashed_store, hashes=_hashes(hashed_store))
    config = EvaluateConfig(**{**TINY, "budgets": [0.5], "arms": ["classic", "pseudo_label", "classic+synthetic",
                                                                  "pseudo_label+selected"],
                               "unlabelled": str(pool.path), "pseudo_label_threshold": 0.0})
    out = protocol.run_evaluation(hashed_store, tmp_path / "eval", config, progress=False)
    cell = out / "work" / "fold-0" / "draw-0" / "budget-0.50"
    train_store, pool_store = PatchStore(cell / "train-store"), PatchStore(cell / "pool-store")
    test_slides = protocol.plan(hashed_store, config, tmp_path / "plan")[0].test_slides
    assert not set(pool_store.slides) & (test_slides | set(train_store.slides))  # outside test and budget
    assert set(pool_store.slides) | set(train_store.slides) == set(hashed_store.slides) - test_slides
    result = json.loads((cell / "results" / "pseudo_label-seed-0.json").read_text())
    pseudo = np.load(cell / "results" / "pseudo-seed-0.npz")
    assert result["n_train"] == len(train_store) and result["n_extra"] == len(pseudo["rows"]) == len(pool_store)
    assert result["batch"] == {"real": 8, "extra": 8} and result["steps"] == 8
    both = json.loads((cell / "results" / "pseudo_label+selected-seed-0.json").read_text())
    assert both["n_extra"] == len(pseudo["rows"]) + len(PatchStore(cell / "selected"))  # the two sources pooled
    assert both["steps"] == 8 and both["augmentation"] == "geometric+stain"
    gan_store = PatchStore(cell / "gan-store")  # the generator learns from the pseudo-labelled pool too
    assert len(gan_store) == len(train_store) + len(pool_store)
    assert set(gan_store.slides) == set(train_store.slides) | set(pool_store.slides)
    generator = json.loads((cell / "synthetic.json").read_text())
    assert generator["leakage"]["shared with test"] == 0 and generator["generator_data"]["pool_patches"] == len(pool_store)


def test_nested_config_round_trips_through_yaml_and_dry_run(tmp_path, capsys, disc_store):
    values = {**TINY, "classifier": {"steps": 77, "network": "resnet18"}, "generator": {"lr_d": 3e-4, "d_steps": 3},
              "augment": {"per_class": 5, "truncation": 0.7}}
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(values))
    assert main(["evaluate", str(disc_store.path), "--out", str(tmp_path / "eval"), "--config", str(path),
                 "--generator-steps", "9", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["classifier"]["steps"] == 77 and printed["classifier"]["network"] == "resnet18"
    assert printed["generator"]["lr_d"] == 3e-4 and printed["generator"]["d_steps"] == 3
    assert printed["generator"]["steps"] == 9 and printed["augment"]["truncation"] == 0.7
    again = build_config(EvaluateConfig, yaml.safe_load(yaml.safe_dump(printed)))
    assert config_to_dict(again) == printed


def test_a_store_whose_bytes_changed_is_refused_before_training(tmp_path, no_training, capsys):
    store = make_disc_store(tmp_path / "store")
    shard = sorted((tmp_path / "store" / "shards").iterdir())[0]
    images = shard / "images.npy"
    data = bytearray(images.read_bytes())
    data[-100:] = bytes(100)  # same size, other pixels: the recorded content hash no longer holds
    images.write_bytes(bytes(data))
    assert main(["evaluate", str(store.path), "--out", str(tmp_path / "eval"), "--folds", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert shard.name in error and "\n" not in error
    assert not (tmp_path / "eval" / "work").exists()


@pytest.mark.parametrize("profile", sorted((Path(__file__).parent.parent / "pipelines").glob("*.yaml")),
                         ids=lambda path: path.name)
def test_every_pipeline_profile_is_a_valid_config(profile, tmp_path):
    """The shipped profiles resolve (the pool given as on their command lines) and print with --dry-run, on a
    store of patches as large as the largest classifier view a profile asks for."""
    from bioaug.config import load_config_file

    store = make_disc_store(tmp_path / "store", patch_size=64)
    pool = make_pool_store(tmp_path / "pool", store)
    config = build_config(EvaluateConfig, {**load_config_file(profile), "unlabelled": str(pool.path)})
    repeats = len(config.seeds) * len(config.budget_draws)  # runs per cell and arm
    assert config.classifier.steps >= 100 and repeats >= 2 and "classic" in config.arms
    assert main(["evaluate", str(store.path), "--out", str(tmp_path / "eval"), "--config", str(profile),
                 "--unlabelled", str(pool.path), "--dry-run"]) == 0
