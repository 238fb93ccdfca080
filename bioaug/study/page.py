"""``bioaug study make``: one self-contained HTML page of patches to judge, and its answer key beside it.

The page carries each patch as an inlined PNG enlarged by whole pixels (nearest neighbour) and shown with
``image-rendering: pixelated``, so no browser smooths what the reader is asked to judge. A content security
policy in the page forbids loading anything, so it works from a file and cannot reach a network.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
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


def png_data_url(image: np.ndarray, zoom: int) -> str:
    """An (H, W, 3) uint8 patch enlarged ``zoom`` times by repeating pixels, as a PNG ``data:`` URL.

    PIL writes no metadata into the PNG, so real and synthetic patches differ only in their pixels.
    """
    from PIL import Image

    enlarged = np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(enlarged), mode="RGB").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def study_id(real: PatchStore, synthetic: PatchStore, config: StudyConfig) -> str:
    """Identifies a study by what it shows: both stores' content and every option."""
    return sha256_json({"real": real.content_hash, "synthetic": synthetic.content_hash,
                        "config": config_to_dict(config)})[:STUDY_ID_LENGTH]


def render_page(identifier: str, config: StudyConfig, items: list[Item], sources: list[str],
                patch_size: int) -> str:
    """The page's HTML: the template with the study's public data (ids, images, classes when shown)."""
    data = {"id": identifier, "title": config.title, "confidence": config.confidence,
            "show_class": config.show_class, "zoom": config.zoom, "display_size": patch_size * config.zoom,
            "items": [{"id": item.id, "src": src, **({"class": item.class_name} if config.show_class else {})}
                      for item, src in zip(items, sources)]}
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
    sources = [png_data_url(stores[item.source].image(item.store_index), config.zoom) for item in items]
    page = render_page(identifier, config, items, sources, real.patch_size)
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
