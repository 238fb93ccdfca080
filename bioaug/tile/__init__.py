"""The tile stage: slides in, a labelled store of nucleus-centred patches out.

Modules: ``config`` (``TileConfig`` and its limits), ``labels`` (point, slide-label and cluster inputs),
``sources`` (label sources behind one interface, by ``--label-by`` name), ``planning`` (preflight and chunk
jobs), ``chunks`` (what a worker runs), ``running`` (``tile``: local pool, any executor or Dask), ``qc``
(density check, border counts, QC pictures) and ``qupath`` (GeoJSON export).

``bioaug.tile`` is both this package and the function users call (``bioaug.tile(slides, out, config)``):
once the package is imported it takes the attribute's place, so the package itself is made callable
(:func:`bioaug.lazy.make_callable`).
"""
from __future__ import annotations

from ..lazy import make_callable
from .config import TileConfig
from .running import tile
from .sources import LabelSource, SlideLabels, register_label_source

__all__ = ["TileConfig", "tile", "LabelSource", "SlideLabels", "register_label_source"]


make_callable(__name__, "bioaug.tile.running:tile")
