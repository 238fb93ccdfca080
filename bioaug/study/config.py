"""``StudyConfig``: every option of ``bioaug study make`` (light: no numpy, no stores)."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import flag, option
from ..errors import ConfigError

MAX_ZOOM = 32


@dataclass
class StudyConfig:
    """Which patches a reader study shows, and how.

    Half of the ``n`` items are real and half synthetic; with ``per_class`` (the default) each half is also split
    evenly over the classes both stores share, so that the kind of tissue on screen, shown or seen, says nothing
    about where a patch came from: drawn at random, the halves' class mixes differ by chance, and "fibroblast,
    so synthetic" would score without judging realism.
    """

    n: int = option(100, "items in the study, half real and half synthetic (an even number)")
    per_class: bool = option(True, "split each half evenly over the classes both stores hold, so the kind of "
                                   "tissue gives nothing away (false: draw each half at random, e.g. for "
                                   "unlabelled stores)")
    seed: int = option(0, "seed of the draw, the order and the item ids: same seed and stores, same page")
    zoom: int = option(4, f"enlargement of every pixel to a zoom x zoom square (nearest neighbour, no smoothing), "
                          f"1-{MAX_ZOOM}")
    show_class: bool = option(False, "show each patch's class under it")
    confidence: bool = option(True, "also ask how sure the reader is (1 guessing, 2 fairly sure, 3 certain); "
                                    "scoring then refuses an answer without one")
    title: str = option("Which of these are real?", "heading of the page")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the option's flag on a value no study could use, before any store is
        read."""
        if self.n < 2 or self.n % 2:
            raise ConfigError(flag("n"), f"must be an even number of at least 2 (half real, half synthetic), got "
                                         f"{self.n}")
        if not 1 <= self.zoom <= MAX_ZOOM:
            raise ConfigError(flag("zoom"), f"must lie in 1-{MAX_ZOOM}, got {self.zoom}")
        if not self.title.strip():
            raise ConfigError(flag("title"), "must not be empty")
