"""Running a tiling: preflight, chunks on a local pool or a Dask cluster, then QC and the sealed store.

A run has three steps. *Preflight* opens every slide and label table in the calling process, so bad input
fails with a one-line error before anything is written. *Chunks* then run inline, on local worker processes,
on any ``concurrent.futures.Executor``, or on a ``dask.distributed`` cluster, each writing one store shard
atomically; a rerun skips chunks whose shard exists with the same inputs, whichever executor wrote it.
*Finish* lets the label source label what needs all shards (clusters), checks nucleus density, writes the QC
pictures and QuPath files and seals the store header.

On Dask the store must be on a filesystem every worker sees at the same path, and every worker must have
bioaug installed: a probe (``bioaug.cluster``) checks both on every worker before any chunk is submitted.
"""
from __future__ import annotations

import logging
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

from ..cluster import connect, probe_workers, worker_memory
from ..config import config_to_dict
from ..errors import ConfigError, SlideError, StoreError
from ..gan.config import MIN_PATCH_SIZE, trainable_patch_size
from ..locks import writer_lock
from ..provenance import run_record
from ..store import HEADER_NAME, SHARDS_DIR, PatchStore, StoreHeader, StoreWriter, read_header
from ..tissue import TissueMasker, tissue_mask
from . import chunks
from .config import RUN_ONLY_FIELDS, TileConfig
from .planning import ChunkJob, SlidePlan, preflight, remove_unplanned_shards
from .qc import check_density, qc_record, report_border, slide_counts, write_qc_picture
from .qupath import export_geojson
from .sources import LABEL_INPUT_PREFIX, make_label_source

log = logging.getLogger("bioaug")


def tile(slides: Sequence[str | Path], out: str | Path, config: TileConfig | None = None, *,
         executor: Executor | None = None, client: Any = None, tissue_masker: TissueMasker = tissue_mask,
         progress: bool = True) -> PatchStore:
    """Tile ``slides`` (files or directories) into the patch store ``out`` and return it.

    Parameters
    ----------
    slides
        Slide files (any OpenSlide format, or plain images) or directories holding them.
    out
        Store directory. A store from the same settings is resumed; new slides are added to it.
    config
        Tiling options; defaults: 32 px patches at 0.5 µm/px, detected nuclei, no labels.
    executor
        Where chunks run: any ``concurrent.futures.Executor``. ``None`` uses ``config.workers`` local processes,
        or the Dask cluster of ``client`` / ``config.scheduler``.
    client
        A ``dask.distributed.Client``; its workers must see ``out`` at the same path (a shared filesystem).
    tissue_masker
        A function from an RGB overview to a boolean tissue mask (default :func:`bioaug.tissue.tissue_mask`).
    progress
        Show a progress bar over chunks.
    """
    config = config or TileConfig()
    config.validate()
    if not trainable_patch_size(config.patch_size):
        log.warning("--patch-size %d: bioaug train needs 4 * 2**n px patches, at least %d (16, 32, 64, ...): this "
                    "store can train a classifier but not the GAN", config.patch_size, MIN_PATCH_SIZE)
    if sum(x is not None for x in (executor, client, config.scheduler)) > 1:
        raise ConfigError("--scheduler", "give one of executor, client or scheduler")
    out = Path(out)
    with writer_lock(out):  # before the store is read, so what is read stays true
        with ExitStack() as stack:
            if config.scheduler is not None:
                client = stack.enter_context(connect(config.scheduler))
            memory = worker_memory(client) if client is not None else None
            source = make_label_source(config)
            old = read_header(out) if (out / HEADER_NAME).is_file() else None
            plans, class_names = preflight(slides, out, config, source, tissue_masker, memory,
                                           stored_slides=[] if old is None else list(_stored_slides(old)))
            if not any(job.regions for plan in plans for job in plan.jobs):
                names = ", ".join(plan.name for plan in plans[:3]) + (" ..." if len(plans) > 3 else "")
                raise SlideError(plans[0].path if len(plans) == 1 else names,
                                 f"{source.nothing_to_tile} the slide(s); nothing to tile")
            for plan in plans:  # after the check above, so a run with nothing at all to tile says it once
                if not plan.jobs and not plan.tissue.any():
                    log.warning("%s: no tissue found; it gives no patches", plan.path)
            header = _header(out, old, config, plans, class_names, source.inputs())
            if client is not None:
                probe_workers(client, out / SHARDS_DIR, "bioaug.tile.chunks", "the store")
                executor = client.get_executor(pure=False)
            writer = StoreWriter(out, header)
            remove_unplanned_shards(out, plans)
            jobs = [job for plan in plans for job in plan.jobs]
            todo = [job for job in jobs if not writer.is_complete(job.shard, job.input_key)]
            if len(jobs) > len(todo):
                log.info("%s: resuming, %d of %d chunks already done", out, len(jobs) - len(todo), len(jobs))
            run_jobs(todo, config.workers, executor, progress, total_slides=len(plans))
        source.finish(writer)
        counts = slide_counts(out, plans)
        writer.header.provenance["qc"] = qc_record(counts, check_density(counts, config.mpp),
                                                   report_border(counts, config.max_padded) if config.border == "skip"
                                                   else {})
        store = writer.finalize()
        for plan in plans:
            export_geojson(store, plan.name)
            if config.qc:
                write_qc_picture(out / "qc" / f"{plan.name}.png", plan, store)
        for name, count in store.header.counts.items():
            if count == 0:
                log.warning("%s: class %r has no patches", out, name)
        return store


def _feature_names() -> list[str]:
    from ..nuclei import FEATURE_NAMES

    return list(FEATURE_NAMES)


def _stored_slides(header: StoreHeader) -> dict[str, str]:
    """Name -> SHA-256 of the slides a store was tiled from (its provenance inputs less the label files)."""
    return {name: digest for name, digest in header.provenance.get("inputs", {}).items()
            if not name.startswith(LABEL_INPUT_PREFIX)}


def _header(out: Path, old: StoreHeader | None, config: TileConfig, plans: list[SlidePlan], class_names: list[str],
            label_inputs: dict[str, str]) -> StoreHeader:
    """This run's store header; tiling into an existing store (``old``) adds slides to it and keeps its slides'
    hashes and paths.

    An existing store tiled with other result-shaping options is refused, so one store never mixes patches
    cut two ways; so is a different slide (another SHA-256) of a name the store has, unless
    ``config.replace_slides`` says it replaces the old one.
    """
    inputs = {plan.name: plan.sha256 for plan in plans} | label_inputs
    paths = {plan.name: str(plan.path.resolve()) for plan in plans}
    options = config_to_dict(config)
    if old is not None:
        old_options = old.provenance.get("config", {})
        differ = [key for key in options if key not in RUN_ONLY_FIELDS and key in old_options
                  and old_options[key] != options[key]]
        if differ:
            key = differ[0]
            raise StoreError(out, f"existing store was tiled with --{key.replace('_', '-')} {old_options[key]!r}, "
                                  f"this run asks {options[key]!r}; choose another output")
        stored, old_paths = _stored_slides(old), old.provenance.get("slide_paths", {})
        for plan in plans:
            if plan.name in stored and stored[plan.name] != plan.sha256:
                was = old_paths.get(plan.name, "path not recorded")
                if not config.replace_slides:
                    raise SlideError(plan.path, f"a different slide of this name ({was}) is already in {out} "
                                                f"(another SHA-256: a re-scan, or another site's slide); rename "
                                                f"this one, choose another --out, or pass --replace-slides true "
                                                f"to replace the old one's patches")
                log.warning("%s: replaces the patches of the slide of this name in %s (%s)", plan.path, out, was)
        added = sorted(plan.name for plan in plans if plan.name not in stored)
        if added and stored:
            log.info("%s: adding %d slide(s) to the existing store (e.g. %s)", out, len(added), added[0])
        inputs = {**old.provenance.get("inputs", {}), **inputs}
        paths = {**old.provenance.get("slide_paths", {}), **paths}
    provenance = run_record(options, inputs) | {"slide_paths": paths}
    return StoreHeader(patch_size=config.patch_size, mpp=config.mpp, class_names=class_names,
                       feature_names=_feature_names(), kind="real", provenance=provenance)


def run_jobs(jobs: list[ChunkJob], workers: int, executor: Executor | None, progress: bool,
             total_slides: int) -> None:
    """Run chunk jobs inline, on a local process pool, or on a given executor, with a progress bar over
    chunks as they complete."""
    from ..progress import progress_bar

    bar = progress_bar(total=len(jobs), unit="chunk", desc="tiling", disable=not progress)
    remaining: dict[str, int] = {}
    for job in jobs:
        remaining[job.slide_path] = remaining.get(job.slide_path, 0) + 1
    done_slides = total_slides - len(remaining)
    patches = 0

    def finished(job: ChunkJob, count: int) -> None:
        nonlocal done_slides, patches
        patches += count
        remaining[job.slide_path] -= 1
        done_slides += remaining[job.slide_path] == 0
        bar.update(1)
        bar.set_postfix(slides=f"{done_slides}/{total_slides}", patches=patches)

    try:
        if executor is None and workers == 1:
            for job in jobs:
                finished(job, chunks.run_chunk(job))
        else:
            own = executor is None
            pool = executor or ProcessPoolExecutor(max_workers=workers)
            try:
                futures = {pool.submit(chunks.run_chunk, job): job for job in jobs}
                for future in as_completed(futures):
                    finished(futures[future], future.result())
            finally:
                if own:
                    pool.shutdown(cancel_futures=True)
                else:
                    for future in futures:
                        future.cancel()
    finally:
        bar.close()
