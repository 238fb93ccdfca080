"""bioaug.evaluate: metrics against scikit-learn, statistics, fidelity, leakage, baseline, report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             recall_score, roc_auc_score)

from bioaug.errors import CheckpointError, ConfigError
from bioaug.evaluate import (bootstrap_ci, bootstrap_metric_ci, check_generator_leakage, check_generator_store,
                             classification_metrics, colour_baseline, colour_features, fidelity_metrics,
                             frechet_distance, generator_training_slides, kernel_distance, paired_test,
                             precision_recall, roc_auc_ovr, summarize, two_sample_accuracy, write_report)


# --- metrics ----------------------------------------------------------------------------------------------------

def _predictions(n: int = 200, n_classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[y_true]
    return y_true, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


@pytest.mark.parametrize("n_classes, seed", [(2, 0), (3, 1), (5, 2)])
def test_metrics_match_scikit_learn(n_classes, seed):
    y_true, y_prob = _predictions(n_classes=n_classes, seed=seed)
    y_pred = y_prob.argmax(1)
    result = classification_metrics(y_true, y_prob)
    assert result["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert result["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert result["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    expected_auc = (roc_auc_score(y_true, y_prob[:, 1]) if n_classes == 2
                    else roc_auc_score(y_true, y_prob, multi_class="ovr", average="macro"))
    assert result["roc_auc"] == pytest.approx(expected_auc)
    recalls = recall_score(y_true, y_pred, average=None)
    assert list(result["sensitivity"].values()) == pytest.approx(recalls)
    specificity = [recall_score(y_true != k, y_pred != k) for k in range(n_classes)]
    assert list(result["specificity"].values()) == pytest.approx(specificity)
    assert result["confusion_matrix"] == confusion_matrix(y_true, y_pred).tolist()


def test_metrics_stay_defined_when_a_class_is_missing_from_the_test_set():
    y_true, y_prob = _predictions(n_classes=4, seed=3)
    keep = y_true != 2
    result = classification_metrics(y_true[keep], y_prob[keep], class_names=["a", "b", "c", "d"])
    assert np.isnan(result["sensitivity"]["c"])
    assert np.isfinite(result["roc_auc"])
    scored = [roc_auc_score(y_true[keep] == k, y_prob[keep][:, k]) for k in (0, 1, 3)]
    assert result["roc_auc"] == pytest.approx(np.mean(scored))
    assert np.isnan(roc_auc_ovr(np.zeros(5, int), np.full((5, 3), 1 / 3)))


# --- statistics -------------------------------------------------------------------------------------------------

def test_bootstrap_ci_covers_the_mean_and_narrows_with_more_runs():
    rng = np.random.default_rng(0)
    widths = []
    for n in (10, 100, 1000):
        values = rng.normal(0.7, 0.1, n)
        low, high = bootstrap_ci(values, seed=1)
        assert low < 0.7 < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert bootstrap_ci(np.arange(10.0), seed=4) == bootstrap_ci(np.arange(10.0), seed=4)


def test_summarize_reports_mean_sd_ci_and_drops_nan():
    summary = summarize([0.6, 0.7, 0.8, float("nan")], seed=0)
    assert summary.n == 3 and summary.mean == pytest.approx(0.7) and summary.sd == pytest.approx(0.1)
    assert summary.ci_low <= summary.mean <= summary.ci_high
    assert summary.format().startswith("0.700 ± 0.100 [")


def test_bootstrap_metric_ci_over_test_samples_brackets_the_point_estimate():
    y_true, y_prob = _predictions(n=300, n_classes=3)
    low, high = bootstrap_metric_ci("balanced_accuracy", y_true, y_prob, n_resamples=200, seed=0)
    point = classification_metrics(y_true, y_prob)["balanced_accuracy"]
    assert low < point < high


def test_paired_test_detects_a_planted_shift_and_not_noise():
    rng = np.random.default_rng(0)
    cells = [(seed, fold, 0.25) for seed in range(5) for fold in range(3)]
    reference = {cell: rng.normal(0.7, 0.08) for cell in cells}
    shifted = paired_test({cell: value + 0.03 for cell, value in reference.items()}, reference)
    assert shifted.n == 15 and shifted.mean_difference == pytest.approx(0.03)
    assert shifted.wilcoxon_p < 0.001 and shifted.t_p < 0.001
    noise = paired_test({cell: value + rng.normal(0, 0.03) for cell, value in reference.items()}, reference)
    assert noise.wilcoxon_p > 0.05 and noise.t_p > 0.05
    partial = paired_test({cells[0]: 1.0}, reference)
    assert partial.n == 1 and np.isnan(partial.wilcoxon_p)
    assert paired_test(reference, reference).wilcoxon_p == 1.0


# --- fidelity ---------------------------------------------------------------------------------------------------

def test_frechet_and_kernel_distances_grow_with_a_shift():
    rng = np.random.default_rng(0)
    real, same = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(real, same) < 0.5 < frechet_distance(real, same + 1.0)
    assert abs(kernel_distance(real, same, subset_size=200)[0]) < 0.02
    assert kernel_distance(real, same + 1.0, subset_size=200)[0] > 0.5


def test_precision_recall_and_two_sample_test():
    rng = np.random.default_rng(1)
    real, same = rng.normal(size=(300, 3)), rng.normal(size=(300, 3))
    precision, recall = precision_recall(real, same, k=5)
    assert precision > 0.9 and recall > 0.9
    assert precision_recall(real, same + 10.0, k=5) == (0.0, 0.0)
    collapsed = precision_recall(real, rng.normal(scale=0.05, size=(300, 3)), k=5)
    assert collapsed[0] > 0.9 and collapsed[1] < 0.3  # realistic but missing modes
    assert abs(two_sample_accuracy(real, same) - 0.5) < 0.1
    assert two_sample_accuracy(real, same + 4.0) > 0.95
    assert set(fidelity_metrics(real, same)) >= {"frechet_distance", "kid", "precision", "recall",
                                                "two_sample_accuracy"}


# --- leakage ----------------------------------------------------------------------------------------------------

def test_leakage_check_refuses_a_generator_trained_on_a_test_slide():
    with pytest.raises(CheckpointError, match=r"^runs/fold0/gan\.pt: generator was trained on 1 test slide"):
        check_generator_leakage({"slide0", "slide1", "slide2"}, ["slide2", "slide3"], source="runs/fold0/gan.pt")
    check_generator_leakage({"slide0", "slide1"}, ["slide2", "slide3"], source="runs/fold0/gan.pt")
    check_generator_store("abc", "abc", source="g.pt")
    with pytest.raises(CheckpointError, match="not this fold's training store"):
        check_generator_store("abc", "def", source="g.pt")


def test_generator_training_slides_come_from_the_recorded_store(disc_store):
    slides = generator_training_slides(disc_store.path, disc_store.content_hash, source="run")
    assert slides == {"slide0", "slide1", "slide2", "slide3"}
    with pytest.raises(CheckpointError, match="^run: generator was trained on store 000000000000"):
        generator_training_slides(disc_store.path, "0" * 64, source="run")
    with pytest.raises(CheckpointError, match="slide3"):
        check_generator_leakage(slides, ["slide3"], source="run")


# --- colour baseline --------------------------------------------------------------------------------------------

def test_colour_baseline_learns_colour_and_handles_a_single_class(disc_store):
    images, labels = disc_store.images(), disc_store.labels
    assert colour_features(images[:5]).shape == (5, 42)
    train = np.isin(disc_store.slides, ["slide0", "slide1", "slide2"])
    for model in ("logistic", "random_forest"):
        probabilities = colour_baseline(images[train], labels[train], images[~train], 3, model=model)
        assert probabilities.shape == (int((~train).sum()), 3)
        assert classification_metrics(labels[~train], probabilities)["balanced_accuracy"] > 0.8
    single = colour_baseline(images[:4], np.zeros(4, int), images[:3], 3)
    assert (single.argmax(1) == 0).all()
    with pytest.raises(ConfigError, match="logistic"):
        colour_baseline(images, labels, images, 3, model="svm")


# --- report -----------------------------------------------------------------------------------------------------

def _results() -> list[dict]:
    rows, rng = [], np.random.default_rng(0)
    for arm, gain in (("real", 0.0), ("classic", 0.02), ("real+synthetic", 0.04), ("colour_only", -0.2)):
        for budget in (0.1, 0.5, 1.0):
            for seed in range(3):
                for fold in range(2):
                    y_true, y_prob = _predictions(60, 3, seed=int(rng.integers(1e6)))
                    row = classification_metrics(y_true, y_prob, ["small", "large", "pale"])
                    row["balanced_accuracy"] += gain + 0.1 * budget
                    rows.append({"arm": arm, "budget": budget, "seed": seed, "fold": fold, **row})
    return rows


def test_report_writer_produces_every_file(tmp_path: Path):
    rng = np.random.default_rng(0)
    samples = (rng.integers(0, 255, (20, 16, 16, 3), dtype=np.uint8),
               rng.integers(0, 255, (70, 16, 16, 3), dtype=np.uint8))
    written = write_report(tmp_path / "report", _results(), class_names=["small", "large", "pale"],
                           protocol={"folds": 2, "budgets": [0.1, 0.5, 1.0], "seeds": [0, 1, 2]},
                           provenance={"store_sha256": "ab12", "seeds": [0, 1, 2]},
                           fidelity={"fold0": {"frechet_distance": 1.5, "two_sample_accuracy": 0.6}},
                           samples=samples, n_resamples=200)
    assert {path.name for path in written.values()} == {"report.md", "report.json", "table.tex",
                                                         "budget_curves.png", "confusion_matrices.png",
                                                         "samples.png"}
    for path in written.values():
        assert path.stat().st_size > 0
    assert not list((tmp_path / "report").glob(".*.tmp"))
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Results, label budget 10%" in markdown and "real+synthetic" in markdown
    assert "Wilcoxon p" in markdown and "ab12" in markdown and "frechet_distance" in markdown
    assert "## Headroom" in markdown and "| real | 10% | Macro-F1 | 6 |" in markdown
    assert "## Per-class F1" in markdown
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(report["summaries"]) == 4 * 3 * 5 and report["versions"]["numpy"]
    comparison = next(c for c in report["comparisons"] if c["arm"] == "real+synthetic" and c["reference"] == "real"
                      and c["metric"] == "balanced_accuracy" and c["budget"] == 1.0)
    assert comparison["n"] == 6
    latex = (tmp_path / "report" / "table.tex").read_text()
    assert r"\toprule" in latex and r"\bottomrule" in latex and r"colour\_only" in latex and r"10\%" in latex
    assert (tmp_path / "report" / "budget_curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"])
def test_metrics_from_confusion_matrices_match_scikit_learn(name):
    from bioaug.evaluate.metrics import metric_from_confusion, scalar_metric

    rng = np.random.default_rng(3)
    for _ in range(5):
        y_true = rng.integers(0, 4, 60)
        y_true[y_true == 3] = 2  # a class absent from truth
        y_prob = rng.dirichlet(np.ones(4), 60)
        matrix = np.bincount(y_true * 4 + y_prob.argmax(1), minlength=16).reshape(4, 4)
        assert metric_from_confusion(name, matrix) == pytest.approx(scalar_metric(name, y_true, y_prob))


def test_image_bootstrap_resamples_whole_images_and_keeps_arms_paired():
    from bioaug.evaluate.metrics import group_confusion
    from bioaug.evaluate.stats import image_bootstrap, percentile_interval

    rng = np.random.default_rng(0)
    groups = np.repeat([f"img{k}" for k in range(10)], 30)
    y_true = rng.integers(0, 3, len(groups))
    # each image is either all right or all wrong: patches of one image are perfectly correlated
    right = np.repeat(rng.random(10) < 0.6, 30)
    predicted = np.where(right, y_true, (y_true + 1) % 3)
    y_prob = np.eye(3)[predicted]
    row = {"fold": 0, "group_confusion": group_confusion(y_true, y_prob, groups)}
    draws = image_bootstrap({"a": row, "b": row}, "accuracy", n_resamples=500, seed=1)
    assert np.array_equal(draws["a"], draws["b"])  # the same draw for every run of the fold
    low, high = percentile_interval(draws["a"])
    patch_low, patch_high = bootstrap_metric_ci("accuracy", y_true, y_prob, n_resamples=500, seed=1)
    image_low, image_high = bootstrap_metric_ci("accuracy", y_true, y_prob, groups=groups, n_resamples=500, seed=1)
    assert high - low > 2 * (patch_high - patch_low)  # correlated patches: the honest interval is wider
    assert image_high - image_low == pytest.approx(high - low, abs=0.1)
    assert low <= right.mean() <= high


def test_minimum_detectable_difference_follows_the_paired_t_formula():
    from scipy import stats as scipy_stats

    from bioaug.evaluate.stats import minimum_detectable_difference

    differences = np.array([0.01, -0.02, 0.03, 0.0, 0.015, -0.01])
    n = len(differences)
    expected = (scipy_stats.t.ppf(0.975, n - 1) + scipy_stats.t.ppf(0.8, n - 1)) * differences.std(ddof=1) / np.sqrt(n)
    assert minimum_detectable_difference(differences) == pytest.approx(expected)
    assert minimum_detectable_difference(np.tile(differences, 4)) < expected  # more pairs, finer resolution
    assert np.isnan(minimum_detectable_difference([0.1]))


def test_main_comparison_words_follow_the_interval_and_the_paired_test():
    from bioaug.evaluate.report import _main_comparison

    def comparison(arm, low, high, p):
        return {"arm": arm, "reference": "classic", "budget": 0.1, "metric": "macro_f1", "n": 10,
                "mean_difference": (low + high) / 2, "delta_ci_low": low, "delta_ci_high": high,
                "wilcoxon_p": p, "detectable": 0.01}

    lines = _main_comparison([comparison("classic+synthetic", 0.01, 0.05, 0.002),
                              comparison("classic+selected", -0.03, 0.01, 0.02),
                              comparison("pseudo_label", -0.01, 0.012, 0.6),
                              comparison("real", -0.05, -0.01, 0.002)], [0.1])
    text = "\n".join(lines)
    assert "**classic+synthetic** at 10%: better than classic" in text
    assert "**classic+selected** at 10%: consistently below classic over the paired runs, but not " \
           "distinguishable over test images" in text
    assert "**pseudo_label** at 10%: not distinguishable from classic" in text
    assert "**real** at 10%: worse than classic" in text


def test_headroom_pairs_each_smaller_budget_with_the_largest_by_fold_and_seed():
    from bioaug.evaluate.report import draw_spread, headroom

    rows = []
    for fold in range(2):
        for seed in range(2):
            rows.append({"arm": "real", "budget": 1.0, "fold": fold, "seed": seed, "draw": 0,
                         "macro_f1": 0.8 + 0.01 * fold})
            for draw in range(2):
                rows.append({"arm": "real", "budget": 0.1, "fold": fold, "seed": seed, "draw": draw,
                             "macro_f1": 0.5 + 0.1 * draw + 0.01 * fold})
    [gap] = headroom(rows, ["macro_f1"])
    assert gap["budget"] == 0.1 and gap["versus"] == 1.0 and gap["n"] == 8  # 2 folds x 2 seeds x 2 draws
    assert gap["mean"] == pytest.approx(0.25)  # draws 0.3 and 0.2 below, fold by fold
    [spread] = draw_spread(rows, ["macro_f1"])
    assert spread["budget"] == 0.1 and spread["means"] == pytest.approx([0.505, 0.605])
    assert spread["range"] == pytest.approx(0.1)
    assert draw_spread([row for row in rows if row["draw"] == 0], ["macro_f1"]) == []  # one draw: no spread
