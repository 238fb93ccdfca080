"""Readers' answer files (the CSV the page downloads), checked line by line against the study's key."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .key import SOURCES, StudyError

ANSWER_COLUMNS = ("study_id", "reader", "item_id", "answer", "confidence", "seconds")
CONFIDENCE_LEVELS = (1, 2, 3)


@dataclass(frozen=True)
class Answer:
    """One reader's answer to one item."""

    reader: str
    item_id: str
    answer: str
    confidence: int | None
    seconds: float


def _confidence(text: str, where: str, path: Path) -> int | None:
    if not text.strip():
        return None
    if text.strip() not in {str(level) for level in CONFIDENCE_LEVELS}:
        raise StudyError(path, f"{where}: confidence {text!r} is not 1, 2, 3 or empty")
    return int(text)


def _seconds(text: str, where: str, path: Path) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise StudyError(path, f"{where}: seconds {text!r} is not a non-negative number")
    return value


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in ANSWER_COLUMNS if name not in (reader.fieldnames or [])]
            if missing:
                raise StudyError(path, f"not a study answers file: no column {', '.join(missing)}")
            return list(reader)
    except OSError as exc:
        raise StudyError(path, f"cannot read answers ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StudyError(path, f"not a readable CSV file ({exc.__class__.__name__})") from None


def read_answers(paths: Iterable[str | Path], key: dict[str, Any]) -> list[Answer]:
    """Every answer in ``paths``, refusing (one line naming the file) another study's answers, item ids the
    study does not have, an item answered twice by one reader (within or across files) and malformed values."""
    known = {item["id"] for item in key["items"]}
    first_seen: dict[tuple[str, str], str] = {}
    answers: list[Answer] = []
    for path in map(Path, paths):
        rows = _rows(path)
        if not rows:
            raise StudyError(path, "holds no answers")
        for line, row in enumerate(rows, start=2):
            where = f"line {line}"
            if row["study_id"] != key["study_id"]:
                raise StudyError(path, f"{where}: answers of study {row['study_id']!r}, not of this study "
                                       f"({key['study_id']})")
            reader, item_id, answer = row["reader"].strip(), row["item_id"].strip(), row["answer"].strip()
            if not reader:
                raise StudyError(path, f"{where}: no reader name")
            if item_id not in known:
                raise StudyError(path, f"{where}: unknown item id {item_id!r} (not in study {key['study_id']})")
            if (reader, item_id) in first_seen:
                raise StudyError(path, f"{where}: reader {reader!r} answered item {item_id!r} twice (first in "
                                       f"{first_seen[reader, item_id]})")
            if answer not in SOURCES:
                raise StudyError(path, f"{where}: answer {answer!r} is not real or synthetic")
            first_seen[reader, item_id] = f"{path}, {where}"
            answers.append(Answer(reader, item_id, answer, _confidence(row["confidence"], where, path),
                                  _seconds(row["seconds"], where, path)))
    return answers
