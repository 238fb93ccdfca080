"""Helpers shared by the tiling tests."""
from __future__ import annotations

from typing import Callable

from bioaug.tile import chunks


def interrupt_after(count: int, done: list[str]) -> Callable:
    """A stand-in for ``chunks.run_chunk`` that runs ``count`` chunks (recording their shards in ``done``),
    then raises KeyboardInterrupt as a user's Ctrl-C would."""
    real_run_chunk = chunks.run_chunk

    def run_chunk(job):
        if len(done) == count:
            raise KeyboardInterrupt
        done.append(job.shard)
        return real_run_chunk(job)

    return run_chunk
