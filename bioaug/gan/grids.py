"""PNG sheets of patches with one labelled row per class: the sample grids a person watches during training."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..provenance import atomic_path

#: Cells are enlarged by a whole factor to at least this many pixels, so 32 px patches stay legible.
MIN_CELL = 64
PAD = 2
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)


def cell_size(patch_size: int) -> int:
    """Side of one grid cell in pixels for patches of ``patch_size``."""
    return patch_size * max(1, MIN_CELL // patch_size)


def class_grid(rows: Sequence[np.ndarray], class_names: Sequence[str], columns: int) -> Image.Image:
    """A sheet with row ``k`` showing up to ``columns`` patches of ``rows[k]`` (uint8, (N, H, W, 3)).

    The image is ``len(rows) * (cell + PAD) + PAD`` pixels high and a label column plus
    ``columns * (cell + PAD) + PAD`` wide, where ``cell = cell_size(patch size)``.
    """
    patch = rows[0].shape[1]
    cell = cell_size(patch)
    font = ImageFont.load_default()
    label_width = int(max(font.getlength(name) for name in class_names)) + 3 * PAD
    width = label_width + columns * (cell + PAD) + PAD
    height = len(rows) * (cell + PAD) + PAD
    sheet = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for row, (patches, name) in enumerate(zip(rows, class_names)):
        top = PAD + row * (cell + PAD)
        draw.text((PAD, top + cell // 2), name, fill=_TEXT, font=font, anchor="lm")
        for column, image in enumerate(patches[:columns]):
            tile = Image.fromarray(image).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (label_width + PAD + column * (cell + PAD), top))
    return sheet


def write_png(image: Image.Image, path: str | Path) -> None:
    """Save ``image`` as PNG under a temporary name and rename it, so a viewer never reads half a file."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
