"""``bioaug study make``: one self-contained HTML page of patches to judge, and its answer key beside it.

The page carries each patch as its raw RGBA pixels (base64 of a byte array of one fixed length), which its
script enlarges by whole pixels (nearest neighbour) onto a canvas, so no browser smooths what the reader is
asked to judge and nothing but the pixels differs between items: an image file's byte length would tell real
from synthetic (their PNGs compress differently). A content security policy in the page forbids loading
anything, so it works from a file and cannot reach a network.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..config import config_to_dict
from ..provenance import run_record, sha256_json, write_json_atomic, write_text_atomic
from ..store import PatchStore
from .config import StudyConfig
from .items import Item, draw_items
from .key import KEY_FORMAT, KEY_NAME, PAGE_NAME, StudyError

STUDY_ID_LENGTH = 12


def rgba_base64(image: np.ndarray) -> str:
    """An (H, W, 3) uint8 patch as base64 of its H x W x 4 RGBA bytes (alpha opaque), row by row: the same
    length for every patch of one size, unlike any compressed encoding."""
    alpha = np.full(image.shape[:2] + (1,), 255, dtype=np.uint8)
    return base64.b64encode(np.concatenate([image.astype(np.uint8), alpha], axis=2).tobytes()).decode("ascii")


def study_id(real: PatchStore, synthetic: PatchStore, config: StudyConfig) -> str:
    """Identifies a study by what it shows: both stores' content and every option."""
    return sha256_json({"real": real.content_hash, "synthetic": synthetic.content_hash,
                        "config": config_to_dict(config)})[:STUDY_ID_LENGTH]


def render_page(identifier: str, config: StudyConfig, items: list[Item], pixels: list[str],
                patch_size: int, mpp: float) -> str:
    """The page's HTML: the template with the study's public data (ids, pixels, classes when shown, and the
    scale shared by every patch)."""
    data = {"id": identifier, "title": config.title, "confidence": config.confidence,
            "show_class": config.show_class, "zoom": config.zoom, "patch_size": patch_size, "mpp": mpp,
            "display_size": patch_size * config.zoom,
            "items": [{"id": item.id, "pixels": rgba, **({"class": item.class_name} if config.show_class else {})}
                      for item, rgba in zip(items, pixels)]}
    # "</" inside the JSON would close the script element early; "<\/" is the same string to JSON.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    template = resources.files(__package__).joinpath("template.html").read_text(encoding="utf-8")
    title = html.escape(config.title).encode("ascii", "xmlcharrefreplace").decode("ascii")  # page stays ASCII
    return template.replace("__TITLE__", title).replace("__STUDY_DATA__", payload)


def _check_out(out: Path, identifier: str) -> None:
    """Refuse to overwrite another study's key: answers already collected for it would become unscorable."""
    key_path = out / KEY_NAME
    if key_path.exists():
        try:
            existing = json.loads(key_path.read_text()).get("study_id")
        except (OSError, ValueError, AttributeError):
            existing = None
        if existing != identifier:
            raise StudyError(out, f"holds another study ({existing or 'unreadable key'}); choose another output "
                                  f"directory")
    elif out.exists() and not out.is_dir():
        raise StudyError(out, "exists and is not a directory")


def make(real: str | Path | PatchStore, synthetic: str | Path | PatchStore, out: str | Path,
         config: StudyConfig | None = None) -> Path:
    """Write a reader study to ``out``: ``study.html`` for the readers and ``key.json`` for the scorer.

    Parameters
    ----------
    real, synthetic
        Patch stores (or their paths) of kind ``real`` and ``synthetic`` with patches of one size.
    out
        Study directory. Rerunning with the same stores and options rewrites the same page; a directory
        holding another study is refused.
    config
        What to show (``StudyConfig``: number of items, per-class balance, seed, zoom, class and confidence).

    Returns
    -------
    Path of the page.
    """
    config = config or StudyConfig()
    config.validate()
    real = real if isinstance(real, PatchStore) else PatchStore(real)
    synthetic = synthetic if isinstance(synthetic, PatchStore) else PatchStore(synthetic)
    out = Path(out)
    items = draw_items(real, synthetic, config)
    identifier = study_id(real, synthetic, config)
    _check_out(out, identifier)
    stores = {"real": real, "synthetic": synthetic}
    pixels = [rgba_base64(stores[item.source].image(item.store_index)) for item in items]
    page = render_page(identifier, config, items, pixels, real.patch_size, real.mpp)
    key: dict[str, Any] = {
        "format": KEY_FORMAT, "study_id": identifier, "positive": "synthetic",
        "class_names": list(dict.fromkeys([*real.class_names, *synthetic.class_names])),
        "items": [item.to_json() for item in items],
        "counts": {source: sum(item.source == source for item in items) for source in stores},
        "provenance": run_record(config_to_dict(config), inputs={
            "real_store": str(real.path.resolve()), "real_store_sha256": real.content_hash,
            "synthetic_store": str(synthetic.path.resolve()), "synthetic_store_sha256": synthetic.content_hash,
            "checkpoint_sha256": synthetic.header.provenance.get("checkpoint_sha256"),
            "page_sha256": hashlib.sha256(page.encode("ascii")).hexdigest()}),
    }
    write_json_atomic(out / KEY_NAME, key)
    write_text_atomic(out / PAGE_NAME, page)
    return out / PAGE_NAME
