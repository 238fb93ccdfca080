"""The reader study: a self-contained page that gives nothing away, its answer key, and its scoring."""
from __future__ import annotations

import base64
import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import binomtest

import bioaug
from bioaug.cli import main
from bioaug.errors import ConfigError, StoreError
from bioaug.study import StudyConfig, StudyError, fleiss_kappa, make, read_key, score
from bioaug.study.answers import ANSWER_COLUMNS
from conftest import make_disc_store

Z = 1.959963984540054  # standard normal 97.5% quantile
CHECKPOINT = "c" * 64


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval written out (Wilson 1927), to check the library's against."""
    p = k / n
    centre = (p + Z ** 2 / (2 * n)) / (1 + Z ** 2 / n)
    half = Z / (1 + Z ** 2 / n) * math.sqrt(p * (1 - p) / n + Z ** 2 / (4 * n ** 2))
    return centre - half, centre + half


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    real = make_disc_store(root / "real", per_class=8, slides=2, seed=0)
    synthetic = make_disc_store(root / "synthetic", per_class=8, slides=2, seed=1, kind="synthetic",
                                provenance={"checkpoint_sha256": CHECKPOINT})
    return real, synthetic


@pytest.fixture
def study(stores, tmp_path):
    """A 24-item study, per class, classes shown: its directory."""
    real, synthetic = stores
    make(real, synthetic, tmp_path / "study", StudyConfig(n=24, per_class=True, show_class=True, seed=3))
    return tmp_path / "study"


def page_data(page: Path) -> dict:
    match = re.search(r'<script type="application/json" id="study-data">(.*?)</script>', page.read_text(), re.S)
    return json.loads(match.group(1))


def write_answers(path: Path, study_id: str, reader: str, answers: list[tuple[str, str, object]]) -> Path:
    """An answers file like the page's download: (item id, answer, confidence) per row."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ANSWER_COLUMNS)
        for item_id, answer, confidence in answers:
            writer.writerow([study_id, reader, item_id, answer, confidence, "1.50"])
    return path


def reader(key: dict, choose) -> list[tuple[str, str, object]]:
    """Answers of a simulated reader: ``choose(item)`` gives (answer, confidence)."""
    return [(item["id"], *choose(item)) for item in key["items"]]


# --- the page and its key ------------------------------------------------------------------------------------

def test_page_is_self_contained_and_holds_no_answer(study, stores):
    page = (study / "study.html").read_text()
    key = read_key(study)
    assert page.isascii()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r"<script[^>]+src=", page)
    data = page_data(study / "study.html")
    assert data["id"] == key["study_id"]
    assert [item["id"] for item in data["items"]] == [item["id"] for item in key["items"]]
    for item in data["items"]:
        assert set(item) == {"id", "pixels", "class"}
    for item in key["items"]:  # nothing of the key reaches the page: no store path, no patch id
        assert item["patch_id"] not in page
    real, synthetic = stores
    assert str(real.path) not in page and str(synthetic.path) not in page


def test_draw_is_balanced_per_class_with_random_unique_ids(study):
    key = read_key(study)
    items = key["items"]
    assert key["counts"] == {"real": 12, "synthetic": 12}
    for source in ("real", "synthetic"):
        classes = [item["class"] for item in items if item["source"] == source]
        assert {name: classes.count(name) for name in set(classes)} == {"small": 4, "large": 4, "pale": 4}
    ids = [item["id"] for item in items]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{8}", token) for token in ids)
    assert sorted(ids) != ids  # order on the page is not the order of the ids
    assert len({(item["source"], item["store_index"]) for item in items}) == len(items)  # no patch twice


@pytest.mark.parametrize("n", [10, 24])
def test_default_draw_gives_both_halves_the_same_class_mix(stores, tmp_path, n):
    """Balanced per class by default: every class is shown as often real as synthetic, also when the classes do
    not divide the half evenly."""
    real, synthetic = stores
    assert StudyConfig().per_class
    make(real, synthetic, tmp_path / "study", StudyConfig(n=n))
    items = read_key(tmp_path / "study")["items"]
    mix = {source: sorted(item["class"] for item in items if item["source"] == source) for source in
           ("real", "synthetic")}
    assert mix["real"] == mix["synthetic"] and len(mix["real"]) == n // 2
    assert max(map(mix["real"].count, set(mix["real"]))) - min(map(mix["real"].count, set(mix["real"]))) <= 1


def test_unlabelled_stores_need_per_class_off(tmp_path):
    real = make_disc_store(tmp_path / "real", per_class=4, slides=1, class_names=("a",))
    synthetic = make_disc_store(tmp_path / "synthetic", per_class=4, slides=1, class_names=("b",),
                                kind="synthetic")
    with pytest.raises(StoreError, match="shares no class with .*turn it off for unlabelled stores"):
        make(real, synthetic, tmp_path / "out", StudyConfig(n=4))
    make(real, synthetic, tmp_path / "out", StudyConfig(n=4, per_class=False))


def test_items_carry_the_store_patches_as_raw_rgba_of_one_length(study, stores):
    key = read_key(study)
    data = page_data(study / "study.html")
    real, synthetic = stores
    by_source = {"real": real, "synthetic": synthetic}
    for shown, item in zip(data["items"], key["items"]):
        rgba = np.frombuffer(base64.b64decode(shown["pixels"]), np.uint8).reshape(32, 32, 4)
        np.testing.assert_array_equal(rgba[..., :3], by_source[item["source"]].image(item["store_index"]))
        assert (rgba[..., 3] == 255).all()
    assert len({len(shown["pixels"]) for shown in data["items"]}) == 1
    assert data["patch_size"] == 32 and data["display_size"] == 32 * 4 and data["zoom"] == 4


def test_nothing_in_the_page_but_the_pixels_tells_real_from_synthetic(tmp_path):
    """Everything a reader's browser can inspect besides the pixels (each item's id, position on the page and in
    the file, the length of its data, its class) leaves trivial classifiers at chance, while a feature that does
    carry the answer is found: the check is not blind."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    real = make_disc_store(tmp_path / "real", per_class=34, slides=2, seed=0)
    synthetic = make_disc_store(tmp_path / "synthetic", per_class=34, slides=2, seed=1, kind="synthetic")
    make(real, synthetic, tmp_path / "study", StudyConfig(n=200, per_class=True, show_class=True, seed=7))
    page = (tmp_path / "study" / "study.html").read_text()
    data = page_data(tmp_path / "study" / "study.html")
    truth = np.array([item["source"] == "synthetic" for item in read_key(tmp_path / "study")["items"]])
    classes = sorted({item["class"] for item in data["items"]})
    features = np.array([
        [position, int(item["id"], 16), *(int(digit, 16) for digit in item["id"]), len(item["pixels"]),
         page.index(item["id"]), len(json.dumps(item)), *(item["class"] == name for name in classes)]
        for position, item in enumerate(data["items"])], dtype=float)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    models = {"logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
              "tree": DecisionTreeClassifier(max_depth=3, random_state=0)}

    def auc(model, x):
        return roc_auc_score(truth, cross_val_predict(model, x, truth, cv=folds, method="predict_proba")[:, 1])

    for name, model in models.items():
        assert abs(auc(model, features) - 0.5) < 0.15, name  # chance: 0.5 ± 0.04 (one s.d.) at n = 200
    leaky = np.column_stack([features, truth + np.random.default_rng(0).normal(0, 0.5, len(truth))])
    assert all(auc(model, leaky) > 0.8 for model in models.values())


def test_key_records_provenance(study, stores):
    real, synthetic = stores
    provenance = read_key(study)["provenance"]
    assert provenance["config"]["seed"] == 3 and provenance["config"]["n"] == 24
    assert provenance["inputs"]["real_store_sha256"] == real.content_hash
    assert provenance["inputs"]["synthetic_store_sha256"] == synthetic.content_hash
    assert provenance["inputs"]["checkpoint_sha256"] == CHECKPOINT
    assert provenance["inputs"]["page_sha256"] == __import__("hashlib").sha256(
        (study / "study.html").read_bytes()).hexdigest()


def test_same_seed_same_page_other_seed_other_study(stores, tmp_path):
    real, synthetic = stores
    make(real, synthetic, tmp_path / "a", StudyConfig(n=10, seed=5))
    make(real, synthetic, tmp_path / "b", StudyConfig(n=10, seed=5))
    make(real, synthetic, tmp_path / "c", StudyConfig(n=10, seed=6))
    assert (tmp_path / "a" / "study.html").read_bytes() == (tmp_path / "b" / "study.html").read_bytes()
    assert read_key(tmp_path / "a")["study_id"] != read_key(tmp_path / "c")["study_id"]
    # the class is hidden unless asked for
    assert all(set(item) == {"id", "pixels"} for item in page_data(tmp_path / "a" / "study.html")["items"])


def test_import_bioaug_study_stays_light():
    code = ("import sys, bioaug; bioaug.study.StudyConfig; "
            "print(sorted(m for m in ('numpy', 'scipy', 'torch', 'matplotlib', 'PIL') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
    assert bioaug.study.make is make


@pytest.mark.parametrize("swap, options, error, match", [
    (True, {}, StoreError, "kind 'synthetic'; the study needs a real store"),
    (False, {"n": 7}, ConfigError, "even number"),
    (False, {"n": 0}, ConfigError, "even number"),
    (False, {"zoom": 0}, ConfigError, "zoom"),
    (False, {"n": 54}, StoreError, "holds 8 patches of class 'small'; the study needs 9"),
    (False, {"n": 100, "per_class": False}, StoreError, "holds 24 patches; the study needs 50"),
])
def test_bad_study_options_are_refused_before_writing(stores, tmp_path, swap, options, error, match):
    real, synthetic = stores
    first, second = (synthetic, real) if swap else (real, synthetic)
    with pytest.raises(error, match=re.escape(match)):
        make(first, second, tmp_path / "out", StudyConfig(**options))
    assert not (tmp_path / "out").exists()


def test_other_patch_size_and_other_study_in_out_are_refused(stores, tmp_path):
    real, synthetic = stores
    big = make_disc_store(tmp_path / "big", per_class=8, slides=2, patch_size=48, kind="synthetic")
    with pytest.raises(StoreError, match="has 48 px patches, but .* has 32 px patches; readers would tell real "
                                         "from synthetic"):
        make(real, big, tmp_path / "out")
    coarse = make_disc_store(tmp_path / "coarse", per_class=8, slides=2, kind="synthetic")
    coarse.header.mpp = 1.0  # as if sampled at another resolution
    with pytest.raises(StoreError, match="is at 1 µm/px, but .* is at 0.5 µm/px; readers would tell real from "
                                         "synthetic"):
        make(real, coarse, tmp_path / "out")
    make(real, synthetic, tmp_path / "out", StudyConfig(n=10))
    with pytest.raises(StudyError, match="holds another study"):
        make(real, synthetic, tmp_path / "out", StudyConfig(n=12))


def test_cli_make_and_score(stores, tmp_path, capsys):
    real, synthetic = stores
    out = tmp_path / "cli"
    assert main(["study", "make", "--real", str(real.path), "--synthetic", str(synthetic.path), "--out", str(out),
                 "--n", "12", "--per-class", "true", "--seed", "1", "--zoom", "2"]) == 0
    assert "12 items (6 real, 6 synthetic)" in capsys.readouterr().out
    key = read_key(out)
    answers = write_answers(tmp_path / "a.csv", key["study_id"], "Dr A", reader(key, lambda i: (i["source"], 3)))
    assert main(["study", "score", str(out), str(answers)]) == 0
    printed = capsys.readouterr().out
    assert "Dr A: accuracy 1.00" in printed and "score.md" in printed
    assert (out / "score.md").is_file() and (out / "score.png").is_file()
    assert main(["study", "make", "--real", str(synthetic.path), "--synthetic", str(real.path),
                 "--out", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(synthetic.path) in error


# --- scoring --------------------------------------------------------------------------------------------------

def test_perfect_reader(study, tmp_path):
    key = read_key(study)
    path = write_answers(tmp_path / "p.csv", key["study_id"], "perfect", reader(key, lambda i: (i["source"], 3)))
    result = score(study, [path], tmp_path / "scores")
    scores = result["readers"]["perfect"]
    assert scores["accuracy"]["value"] == 1.0 and scores["accuracy"]["k"] == 24
    assert scores["accuracy"]["ci95"][0] == pytest.approx(0.8620237953, abs=1e-9)  # 1 / (1 + z²/24)
    assert scores["accuracy"]["ci95"][1] == pytest.approx(1.0)
    assert scores["accuracy"]["p_value"] == pytest.approx(2 * 0.5 ** 24)
    assert scores["sensitivity"]["value"] == 1.0 and scores["specificity"]["value"] == 1.0
    assert scores["by_confidence"] == {"3": {"k": 24, "n": 24, "value": 1.0, "ci95": pytest.approx(
        list(wilson(24, 24)))}}
    assert list(scores["per_class"]) == ["small", "large", "pale"]  # in the stores' class order
    assert all(c["accuracy"]["k"] == c["accuracy"]["n"] == 8 for c in scores["per_class"].values())
    assert result["agreement"] is None
    written = json.loads((tmp_path / "scores" / "score.json").read_text())
    assert written["readers"]["perfect"]["accuracy"]["k"] == 24
    assert written["provenance"]["study"]["checkpoint_sha256"] == CHECKPOINT
    markdown = (tmp_path / "scores" / "score.md").read_text()
    assert "| perfect | 24 | 1.00 [0.86, 1.00] (24/24) |" in markdown
    figure = Image.open(tmp_path / "scores" / "score.png")
    assert figure.format == "PNG" and figure.size[0] > 800


def test_always_real_reader_is_at_chance_with_no_sensitivity(study, tmp_path):
    key = read_key(study)
    path = write_answers(tmp_path / "r.csv", key["study_id"], "always real", reader(key, lambda i: ("real", 1)))
    scores = score(study, [path], tmp_path)["readers"]["always real"]
    assert scores["accuracy"]["value"] == 0.5
    assert scores["accuracy"]["ci95"] == pytest.approx([0.3142742582, 0.6857257418])
    assert scores["accuracy"]["p_value"] == pytest.approx(1.0)
    assert scores["sensitivity"] == {"k": 0, "n": 12, "value": 0.0, "ci95": pytest.approx([0.0, 0.2424940067])}
    assert scores["specificity"]["value"] == 1.0
    assert scores["confusion"] == {"synthetic_called_synthetic": 0, "synthetic_called_real": 12,
                                   "real_called_real": 12, "real_called_synthetic": 0}
    assert scores["by_confidence"] == {"1": {"k": 12, "n": 24, "value": 0.5, "ci95": pytest.approx(
        list(wilson(12, 24)))}}


def test_coin_flipping_readers_and_agreement(study, tmp_path):
    key = read_key(study)
    rng = np.random.default_rng(11)
    files, truths, saids = [], [], []
    for name in ("coin A", "coin B", "coin C"):
        flips = {item["id"]: ("real", "synthetic")[rng.integers(2)] for item in key["items"]}
        confidence = {item["id"]: int(rng.integers(1, 4)) for item in key["items"]}
        files.append(write_answers(tmp_path / f"{name}.csv", key["study_id"], name,
                                   reader(key, lambda i: (flips[i["id"]], confidence[i["id"]]))))
        truths.append([item["source"] for item in key["items"]])
        saids.append([flips[item["id"]] for item in key["items"]])
    result = score(study, files, tmp_path)
    for name, truth, said in zip(("coin A", "coin B", "coin C"), truths, saids):
        scores = result["readers"][name]
        k = sum(t == s for t, s in zip(truth, said))
        expected = binomtest(k, 24, 0.5)
        assert scores["accuracy"]["k"] == k
        assert scores["accuracy"]["p_value"] == pytest.approx(expected.pvalue)
        assert scores["accuracy"]["ci95"] == pytest.approx(list(wilson(k, 24)))
        true_positive = sum(t == s == "synthetic" for t, s in zip(truth, said))
        assert scores["sensitivity"]["k"] == true_positive and scores["sensitivity"]["n"] == 12
    pooled = result["pooled"]
    k = sum(t == s for truth, said in zip(truths, saids) for t, s in zip(truth, said))
    assert pooled["accuracy"]["k"] == k and pooled["accuracy"]["n"] == 72
    assert pooled["accuracy"]["p_value"] == pytest.approx(binomtest(k, 72).pvalue)
    assert sum(level["n"] for level in pooled["by_confidence"].values()) == 72
    table = np.array([[sum(said[i] == source for said in saids) for source in ("real", "synthetic")]
                      for i in range(24)])
    assert result["agreement"]["items"] == 24
    assert result["agreement"]["fleiss_kappa"] == pytest.approx(fleiss_kappa(table))
    markdown = (tmp_path / "score.md").read_text()
    assert "all readers" in markdown and "Fleiss' kappa" in markdown


def test_fleiss_kappa_on_known_tables():
    # Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, kappa 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=5e-4)
    assert fleiss_kappa([[2, 0], [0, 2], [2, 0]]) == pytest.approx(1.0)
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)  # two raters who never agree
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # everyone said the same: chance agreement is perfect
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 0]])


def test_partial_answers_are_scored_on_what_was_answered(study, tmp_path):
    key = read_key(study)
    answers = reader(key, lambda i: (i["source"], 2))[:10]
    result = score(study, [write_answers(tmp_path / "p.csv", key["study_id"], "half", answers)], tmp_path)
    assert result["readers"]["half"]["answered"] == 10 and result["items"] == 24
    assert result["readers"]["half"]["accuracy"]["n"] == 10


@pytest.mark.parametrize("problem, match", [
    ("other study", "line 2: answers of study 'ffffffffffff', not of this study"),
    ("unknown item", "line 3: unknown item id 'deadbeef'"),
    ("duplicate", "line 5: reader 'Dr A' answered item"),
    ("bad answer", "line 2: answer 'maybe' is not real or synthetic"),
    ("bad confidence", "line 2: confidence '5' is not 1, 2 or 3"),
    ("blank confidence", "line 3: no confidence, but the study asked for one (1, 2 or 3)"),
    ("bad seconds", "line 2: seconds '-1' is not a non-negative number"),
    ("no columns", "not a study answers file: no column"),
    ("empty", "holds no answers"),
    ("cut off mid-line", "line 4: cut short, no value for confidence, seconds"),  # 19.8: was AttributeError
    ("too many values", "line 2: more values than the header's 6 columns"),
])
def test_answers_that_do_not_match_the_study_are_refused(study, tmp_path, capsys, problem, match):
    key = read_key(study)
    rows = [[key["study_id"], "Dr A", item["id"], item["source"], "2", "1.0"] for item in key["items"][:3]]
    if problem == "other study":
        rows[0][0] = "ffffffffffff"
    elif problem == "unknown item":
        rows[1][2] = "deadbeef"
    elif problem == "duplicate":
        rows.append(list(rows[0]))
    elif problem == "bad answer":
        rows[0][3] = "maybe"
    elif problem == "bad confidence":
        rows[0][4] = "5"
    elif problem == "blank confidence":
        rows[1][4] = " "
    elif problem == "bad seconds":
        rows[0][5] = "-1"
    elif problem == "empty":
        rows = []
    elif problem == "cut off mid-line":
        rows[2] = rows[2][:4]
    elif problem == "too many values":
        rows[0].append("extra")
    path = tmp_path / "answers.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b"] if problem == "no columns" else ANSWER_COLUMNS)
        writer.writerows(rows)
    with pytest.raises(StudyError, match=re.escape(match)):
        score(study, [path], tmp_path / "scores")
    assert main(["study", "score", str(study), str(path), "--out", str(tmp_path / "scores")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"bioaug: error: {path}: ")
    assert not (tmp_path / "scores").exists()


def test_one_reader_twice_across_files_names_the_second_file(study, tmp_path):
    key = read_key(study)
    answers = reader(key, lambda i: (i["source"], 1))
    first = write_answers(tmp_path / "first.csv", key["study_id"], "Dr A", answers[:5])
    second = write_answers(tmp_path / "second.csv", key["study_id"], "Dr A", answers[4:8])
    with pytest.raises(StudyError, match=re.escape(f"{second}: line 2: reader 'Dr A' answered item "
                                                   f"'{answers[4][0]}' twice (first in {first}, line 6)")):
        score(study, [first, second])


def test_reader_names_differing_in_case_and_spacing_are_one_reader(study, tmp_path, capsys):
    key = read_key(study)
    answers = reader(key, lambda i: (i["source"], 3))
    first = write_answers(tmp_path / "first.csv", key["study_id"], "Dr Perfect", answers[:10])
    second = write_answers(tmp_path / "second.csv", key["study_id"], "dr  perfect ", answers[10:])
    result = score(study, [first, second], tmp_path / "scores")
    assert list(result["readers"]) == ["Dr Perfect"] and result["agreement"] is None
    assert result["readers"]["Dr Perfect"]["answered"] == 24
    assert result["readers"]["Dr Perfect"]["spellings"] == ["Dr Perfect", "dr  perfect"]
    assert ("Reader names are compared ignoring case and spacing (\"dr a \" and \"Dr A\" are one reader); written "
            "in more than one way: Dr Perfect also as 'dr  perfect'.") in (tmp_path / "scores" / "score.md").read_text()
    again = write_answers(tmp_path / "again.csv", key["study_id"], "DR PERFECT", answers[:1])
    with pytest.raises(StudyError, match="reader 'Dr Perfect' answered item"):
        score(study, [first, again])


def test_confidence_only_where_the_study_asked_for_it(stores, tmp_path):
    real, synthetic = stores
    make(real, synthetic, tmp_path / "plain", StudyConfig(n=6, confidence=False))
    key = read_key(tmp_path / "plain")
    blank = write_answers(tmp_path / "blank.csv", key["study_id"], "B", reader(key, lambda i: ("real", "")))
    assert list(score(tmp_path / "plain", [blank])["readers"]["B"]["by_confidence"]) == ["none"]
    given = write_answers(tmp_path / "given.csv", key["study_id"], "C", reader(key, lambda i: ("real", 2)))
    with pytest.raises(StudyError, match=re.escape("line 2: confidence '2', but the study did not ask for one")):
        score(tmp_path / "plain", [given])


def test_score_without_key_or_without_answers(study, tmp_path):
    with pytest.raises(StudyError, match="no answer key"):
        score(tmp_path, [tmp_path / "a.csv"])
    with pytest.raises(StudyError, match="no answer files"):
        score(study, [])


def test_readme_synopsis_names_every_study_option():
    """The README's `bioaug study` synopsis is written by hand (the generated synopses cover one-word commands):
    it must name every option of StudyConfig with its default."""
    import dataclasses

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    synopsis = readme.split("## `bioaug study`", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    for spec in dataclasses.fields(StudyConfig):
        flag = "--" + spec.name.replace("_", "-")
        default = str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default)
        assert f"[{flag} " in synopsis, flag
        assert spec.name == "title" or f"[{flag} {default}]" in synopsis, (flag, default)
