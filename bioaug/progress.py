"""Progress for every loop a person waits on: a bar on a terminal, a log line at a steady interval elsewhere.

tqdm switches itself off when stderr is not a terminal, so an hour-long run in a batch job would print
nothing at all. :func:`progress_bar` keeps tqdm's bar (rate and ETA) on a terminal and otherwise logs one
line through the ``bioaug`` logger every :func:`log_interval` seconds (count/total, rate, ETA and the
postfix), plus a closing line for loops that logged at all. ``--quiet`` calls :func:`set_quiet` so both are
silenced. The interval can be set with :func:`set_log_interval` or the ``BIOAUG_PROGRESS_INTERVAL``
environment variable (seconds; default 30).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator, Mapping

from tqdm import tqdm

log = logging.getLogger("bioaug.progress")

#: Seconds between log lines when stderr is not a terminal.
DEFAULT_LOG_INTERVAL_S = 30.0

_state = {"quiet": False, "interval": None}


def set_quiet(quiet: bool = True) -> None:
    """Silence (or re-enable) every progress bar and progress log line of this process."""
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    """True after ``set_quiet(True)``."""
    return bool(_state["quiet"])


def set_log_interval(seconds: float | None) -> None:
    """Seconds between progress log lines off a terminal (None: the environment's or the default)."""
    _state["interval"] = None if seconds is None else float(seconds)


def log_interval() -> float:
    """The interval in force: :func:`set_log_interval`, else ``BIOAUG_PROGRESS_INTERVAL``, else 30 s."""
    if _state["interval"] is not None:
        return float(_state["interval"])
    try:
        return float(os.environ.get("BIOAUG_PROGRESS_INTERVAL", DEFAULT_LOG_INTERVAL_S))
    except ValueError:
        return DEFAULT_LOG_INTERVAL_S


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", disable: bool | None = False, **kw: Any) -> Any:
    """A tqdm-like progress object: ``update``, ``set_postfix``, ``close``, ``write``, ``with`` and iteration.

    On a terminal it is a ``tqdm`` bar (``kw`` is passed on, e.g. ``initial``); when stderr is not a terminal
    it is a :class:`LogProgress` that logs a line at a steady interval. ``disable=True`` or
    :func:`set_quiet` give a silent pass-through. ``disable=None`` means the same as False here: going quiet
    off a terminal is exactly what this helper exists to avoid.
    """
    if disable or is_quiet():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True)
    if _stderr_is_terminal():
        kw.setdefault("dynamic_ncols", True)
        return tqdm(iterable, total=total, desc=desc, unit=unit, **kw)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=kw.get("initial", 0))


def write(message: str) -> None:
    """Print a message without breaking a progress bar drawn on the terminal (tqdm's ``write``)."""
    tqdm.write(message)


class LogProgress:
    """tqdm's interface for logs: one INFO line every :func:`log_interval` seconds instead of a redrawn bar.

    A line reads ``train: 1200/20000 step (6%), 3.21 step/s, ETA 1:37:12, D=0.812 G=1.204``.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, interval: float | None = None) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc or "progress"
        self.unit = unit
        self.n = initial
        self.interval = log_interval() if interval is None else interval
        self.postfix = ""
        self.lines = 0
        self._initial = initial
        self._started = self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LogProgress made without an iterable cannot be iterated")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Advance by ``n`` and log a line when the interval has passed since the last one."""
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(now)

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        """Extra values shown at the end of each line (losses, probabilities, ...)."""
        values = {**(ordered_dict or {}), **kwargs}
        self.set_postfix_str(", ".join(f"{key}={value}" for key, value in values.items()))

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = str(text)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc

    def refresh(self) -> None:
        """Nothing to redraw in a log."""

    def write(self, message: str) -> None:
        write(message)

    def close(self) -> None:
        """Log a closing line for a loop that logged before, so a log shows how it ended."""
        if self._closed:
            return
        self._closed = True
        if self.lines:
            self._emit(time.monotonic(), done=True)

    def _emit(self, now: float, done: bool = False) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = (self.n - self._initial) / elapsed
        count = f"{self.n:g}" if self.total is None else f"{self.n:g}/{self.total:g}"
        parts = [f"{self.desc}: {count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if done:
            parts.append(f"done in {tqdm.format_interval(elapsed)}")
        elif self.total is not None and rate > 0:
            parts.append(f"ETA {tqdm.format_interval(max(0.0, (self.total - self.n) / rate))}")
        if self.postfix:
            parts.append(self.postfix)
        log.info(", ".join(parts))
        self.lines += 1
