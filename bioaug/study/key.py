"""The answer key of a study (``DIR/key.json``): the contract between the page maker and the scorer.

The page holds only random item ids and images; which item is real, where it came from and the study's
provenance stay here, beside the page, and never travel to readers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BioaugError

KEY_NAME = "key.json"
PAGE_NAME = "study.html"
KEY_FORMAT = 1
SOURCES = ("real", "synthetic")


class StudyError(BioaugError):
    """A study directory or an answers file does not match its study."""


def read_key(study: str | Path) -> dict[str, Any]:
    """The answer key of study directory ``study`` (or of a ``key.json`` given directly)."""
    path = Path(study)
    path = path / KEY_NAME if path.is_dir() else path
    try:
        key = json.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(path, f"no answer key here (made by `bioaug study make`)") from None
    except OSError as exc:
        raise StudyError(path, f"cannot read the answer key ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(path, f"answer key is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(key, dict) or key.get("format") != KEY_FORMAT or not isinstance(key.get("items"), list):
        raise StudyError(path, f"not a study answer key of format {KEY_FORMAT}")
    return key
