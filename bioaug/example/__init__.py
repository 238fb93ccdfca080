"""The built-in example slide: a procedural H&E-like whole-slide image whose nuclei are known.

``write_example_slide`` writes a pyramidal, tiled, JPEG-compressed TIFF that OpenSlide opens (vendor
``generic-tiff``) and, beside it, ``<stem>.nuclei.csv`` with every nucleus centre and class in the shape of a
point-annotation CSV. It is the default input of ``bioaug demo`` and the ground truth for tests of tiling and
nucleus detection, so the nuclei are made to be found by a training-free haematoxylin detector and their classes
to differ in size, shape and staining:

- lymphocyte: small (about 6.5 µm), round and very dark, packed in aggregates and scattered in stroma;
- epithelial: larger (about 10.5 x 8 µm), oval and pale, with chromatin texture and a darker rim, in nests
  around gland lumens;
- fibroblast: a thin spindle (about 16 x 3.5 µm) in the stroma, aligned with the local fibre direction.

The scene is described once, in micrometres: smooth random fields (tissue, epithelial nests, lymphoid
aggregates, fibre orientation, gland lumens) and a list of nuclei kept in a spatial grid. Every tile of every
pyramid level is rendered from that description at the level's own scale, by Beer-Lambert mixing of a
haematoxylin and an eosin stain, so the levels agree with each other and no level is ever held in memory.

Modules, each importing only those before it: ``layout`` (the tissue fields and compartments), ``nuclei`` (the
classes, their look and placement), ``scene`` (both, drawn from one seed), ``rendering`` (one tile of one level)
and ``writer`` (the TIFF pyramid and the CSV; ``write_example_slide``).
"""
from __future__ import annotations

from .nuclei import CLASS_NAMES
from .writer import ExampleSlide, write_example_slide

__all__ = ["CLASS_NAMES", "ExampleSlide", "write_example_slide"]
