"""Kept so that ``from bioaug.tiling import TileConfig, tile`` in existing scripts still works; the tile stage
lives in :mod:`bioaug.tile`."""
from __future__ import annotations

from .tile import TileConfig, tile

__all__ = ["TileConfig", "tile"]
