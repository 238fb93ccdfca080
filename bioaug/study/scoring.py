"""``bioaug study score``: how well readers told real from synthetic patches, with honest uncertainty.

"Positive" means synthetic: sensitivity is the share of synthetic patches a reader called synthetic,
specificity the share of real patches called real. Accuracy near 0.5 means readers could not tell them apart.
Intervals are Wilson 95% score intervals and p values two-sided exact binomial tests against 0.5
(``scipy.stats.binomtest``). Agreement between readers is Fleiss' kappa over the items every reader answered.
Reader names are compared ignoring case and spacing (``answers.reader_key``), and the report says so.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..provenance import run_record, sha256_file, write_json_atomic, write_text_atomic
from .answers import CONFIDENCE_LEVELS, Answer, read_answers
from .key import SOURCES, StudyError, read_key

SCORE_NAMES = ("score.md", "score.json", "score.png")


def proportion(k: int, n: int) -> dict[str, Any]:
    """``k`` of ``n`` as a share with its Wilson 95% interval (value and interval None when ``n`` is 0)."""
    from scipy.stats import binomtest

    if n == 0:
        return {"k": 0, "n": 0, "value": None, "ci95": None}
    interval = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return {"k": int(k), "n": int(n), "value": k / n, "ci95": [float(interval.low), float(interval.high)]}


def detection_rates(truth: np.ndarray, said: np.ndarray) -> dict[str, Any]:
    """Accuracy (with a two-sided binomial test against 0.5), sensitivity and specificity of answers ``said``
    against ``truth``; both boolean arrays, True meaning synthetic."""
    from scipy.stats import binomtest

    truth, said = np.asarray(truth, bool), np.asarray(said, bool)
    correct = int((truth == said).sum())
    accuracy = proportion(correct, len(truth))
    accuracy["p_value"] = float(binomtest(correct, len(truth), 0.5).pvalue) if len(truth) else None
    return {"accuracy": accuracy,
            "sensitivity": proportion(int((truth & said).sum()), int(truth.sum())),
            "specificity": proportion(int((~truth & ~said).sum()), int((~truth).sum())),
            "confusion": {"synthetic_called_synthetic": int((truth & said).sum()),
                          "synthetic_called_real": int((truth & ~said).sum()),
                          "real_called_real": int((~truth & ~said).sum()),
                          "real_called_synthetic": int((~truth & said).sum())}}


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of an (items, categories) table of how many raters put each item in each category.

    Every item must have the same number of raters (at least 2). None when chance agreement is already
    perfect (every rating in one category), where kappa is undefined.

    References
    ----------
    Fleiss, J. L. (1971). Measuring nominal scale agreement among many raters. Psychological Bulletin 76(5).
    """
    counts = np.asarray(counts, dtype=np.float64)
    raters = counts.sum(axis=1)
    if counts.ndim != 2 or len(counts) == 0 or raters.min() < 2 or np.ptp(raters) != 0:
        raise ValueError("Fleiss' kappa needs at least one item and the same number (>= 2) of raters per item")
    n = raters[0]
    agreement = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    shares = counts.sum(axis=0) / counts.sum()
    chance = float((shares ** 2).sum())
    if np.isclose(chance, 1.0):
        return None
    return float((agreement.mean() - chance) / (1 - chance))


def summarize(answers: Sequence[Answer], truth: dict[str, str], classes: dict[str, str | None],
              class_order: Sequence[str] = ()) -> dict[str, Any]:
    """Detection rates of ``answers`` overall, per class of the item (in ``class_order``, then by name), and
    per confidence level."""
    def rates(chosen: Sequence[Answer]) -> dict[str, Any]:
        return detection_rates(np.array([truth[a.item_id] == "synthetic" for a in chosen], bool),
                               np.array([a.answer == "synthetic" for a in chosen], bool))

    present = {classes[a.item_id] for a in answers if classes[a.item_id] is not None}
    names = [name for name in class_order if name in present] + sorted(present - set(class_order))
    by_confidence = {}
    for level in (*CONFIDENCE_LEVELS, None):
        chosen = [a for a in answers if a.confidence == level]
        if chosen:
            by_confidence["none" if level is None else str(level)] = proportion(
                sum(truth[a.item_id] == a.answer for a in chosen), len(chosen))
    return {**rates(answers),
            "per_class": {name: rates([a for a in answers if classes[a.item_id] == name]) for name in names},
            "by_confidence": by_confidence}


def agreement(answers: Sequence[Answer], readers: Sequence[str]) -> dict[str, Any] | None:
    """Fleiss' kappa over the items that every reader answered; None with fewer than two readers."""
    if len(readers) < 2:
        return None
    by_item: dict[str, Counter[str]] = {}
    for answer in answers:
        by_item.setdefault(answer.item_id, Counter())[answer.answer] += 1
    common = sorted(item for item, votes in by_item.items() if sum(votes.values()) == len(readers))
    table = np.array([[by_item[item][source] for source in SOURCES] for item in common], dtype=np.int64)
    return {"readers": len(readers), "items": len(common),
            "fleiss_kappa": fleiss_kappa(table) if len(common) else None}


def score_answers(key: dict[str, Any], answers: Sequence[Answer]) -> dict[str, Any]:
    """Scores of every reader and of all readers pooled, and their agreement, as a JSON-ready dict."""
    truth = {item["id"]: item["source"] for item in key["items"]}
    classes = {item["id"]: item["class"] for item in key["items"]}
    order = key.get("class_names", [])
    readers = list(dict.fromkeys(answer.reader for answer in answers))
    per_reader = {}
    for reader in readers:
        mine = [answer for answer in answers if answer.reader == reader]
        per_reader[reader] = {"answered": len(mine),
                              "spellings": sorted({answer.spelled for answer in mine}),
                              "median_seconds": float(np.median([answer.seconds for answer in mine])),
                              **summarize(mine, truth, classes, order)}
    return {"study_id": key["study_id"], "positive": "synthetic", "items": len(key["items"]),
            "item_counts": key.get("counts", {}), "readers": per_reader,
            "pooled": {"answered": len(answers), **summarize(answers, truth, classes, order)},
            "agreement": agreement(answers, readers)}


def score(study: str | Path, answers: Iterable[str | Path], out: str | Path | None = None) -> dict[str, Any]:
    """Score readers' answer files against study directory ``study``; write score.md, score.json and
    score.png to ``out`` (default: the study directory) and return what score.json holds.

    Raises ``StudyError`` (one line naming the file) for another study's answers, unknown item ids, an item
    answered twice by one reader, or malformed values; nothing is written then.
    """
    from .report import plot_scores, scores_markdown

    study = Path(study)
    key = read_key(study)
    paths = [Path(path) for path in answers]
    if not paths:
        raise StudyError(study, "no answer files given to score")
    result = score_answers(key, read_answers(paths, key))
    out = Path(out) if out is not None else (study if study.is_dir() else study.parent)
    record = run_record({}, inputs={str(path): sha256_file(path) for path in paths})
    result["provenance"] = {"study": key["provenance"].get("inputs", {}), "seed": key["provenance"].get(
        "config", {}).get("seed"), "scoring": record}
    plot_scores(result, out / "score.png")
    write_text_atomic(out / "score.md", scores_markdown(result))
    write_json_atomic(out / "score.json", result)
    return result
