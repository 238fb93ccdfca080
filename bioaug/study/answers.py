"""Readers' answer files (the CSV the page downloads), checked line by line against the study's key."""
from __future__ import annotations

import csv
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .key import SOURCES, StudyError

ANSWER_COLUMNS = ("study_id", "reader", "item_id", "answer", "confidence", "seconds")
CONFIDENCE_LEVELS = (1, 2, 3)


@dataclass(frozen=True)
class Answer:
    """One reader's answer to one item. ``reader`` is the reader's name as first seen, ``spelled`` as in this
    row (they differ in case or spacing only)."""

    reader: str
    item_id: str
    answer: str
    confidence: int | None
    seconds: float
    spelled: str


def reader_key(name: str) -> str:
    """What identifies a reader: the name with Unicode compatibility forms, case and runs of spaces folded, so
    that "dr perfect " and "Dr  Perfect" are one reader, not two."""
    return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()


def _confidence(text: str, asked: bool, where: str, path: Path) -> int | None:
    """The confidence level of a row: required where the study asked for one, refused where it did not."""
    if not text.strip():
        if asked:
            raise StudyError(path, f"{where}: no confidence, but the study asked for one (1, 2 or 3)")
        return None
    if not asked:
        raise StudyError(path, f"{where}: confidence {text!r}, but the study did not ask for one")
    if text.strip() not in {str(level) for level in CONFIDENCE_LEVELS}:
        raise StudyError(path, f"{where}: confidence {text!r} is not 1, 2 or 3")
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
            rows = list(reader)
    except OSError as exc:
        raise StudyError(path, f"cannot read answers ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StudyError(path, f"not a readable CSV file ({exc.__class__.__name__})") from None
    for line, row in enumerate(rows, start=2):
        absent = [name for name, value in row.items() if value is None]
        if absent:  # a file cut off mid-line (a download interrupted, a copy truncated)
            raise StudyError(path, f"line {line}: cut short, no value for {', '.join(absent)}")
        if None in row:
            raise StudyError(path, f"line {line}: more values than the header's {len(reader.fieldnames)} columns")
    return rows



def read_answers(paths: Iterable[str | Path], key: dict[str, Any]) -> list[Answer]:
    """Every answer in ``paths``, refusing (one line naming the file) another study's answers, item ids the
    study does not have, an item answered twice by one reader (within or across files, names compared by
    ``reader_key``), a blank confidence where the study asked for one, and malformed values."""
    known = {item["id"] for item in key["items"]}
    asked = bool(key["provenance"]["config"]["confidence"])
    names: dict[str, str] = {}
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
            spelled, item_id, answer = row["reader"].strip(), row["item_id"].strip(), row["answer"].strip()
            if not spelled:
                raise StudyError(path, f"{where}: no reader name")
            reader = names.setdefault(reader_key(spelled), " ".join(spelled.split()))
            if item_id not in known:
                raise StudyError(path, f"{where}: unknown item id {item_id!r} (not in study {key['study_id']})")
            if (reader, item_id) in first_seen:
                raise StudyError(path, f"{where}: reader {reader!r} answered item {item_id!r} twice (first in "
                                       f"{first_seen[reader, item_id]})")
            if answer not in SOURCES:
                raise StudyError(path, f"{where}: answer {answer!r} is not real or synthetic")
            first_seen[reader, item_id] = f"{path}, {where}"
            answers.append(Answer(reader, item_id, answer, _confidence(row["confidence"], asked, where, path),
                                  _seconds(row["seconds"], where, path), spelled))
    return answers
