"""The evaluation on a Dask cluster: the task graph of ``bioaug.evaluate.graph`` submitted to a client.

Each task loads its cell's data and runs on a worker the method the local path runs (``Evaluation.run_arm``,
``pseudo_labels``, ``CellGenerators.train_generator``, ``prepare_synthetic``), which reuses its result (a result
file, a finished GAN run) when the key matches and otherwise writes it atomically, so a finished task is never
recomputed on any scheduler, and a task lost with its worker leaves no half-written result: Dask runs it again
elsewhere. Stores travel by path (``PatchStore.__reduce__``), so the input stores and the work directory must be
on a filesystem every worker sees at the same path (the work directory is checked by a probe first).

With ``device: cuda`` every torch task asks for the worker resource ``GPU=1`` (workers started with
``--resources GPU=1`` take them, one at a time each); with ``cpu`` or ``auto`` tasks go to any worker, and
``auto`` uses a GPU where the worker has one. Each task runs torch with ``task_threads`` threads.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import torch
from distributed.diagnostics.plugin import WorkerPlugin

from ..cluster import probe_workers
from ..config import flag
from ..errors import ConfigError, StoreError
from ..progress import progress_bar
from ..store import PatchStore
from .arms import ARMS
from .cells import Cell
from .config import EvaluateConfig
from .external import ExternalSet
from .generators import recorded_stores
from .graph import Task, cell_tasks, resources
from .protocol import CellResult, Evaluation, arm_order


def run_task(task: Task, store: PatchStore, config: EvaluateConfig, cell: Cell, externals: list[ExternalSet],
             inputs: dict[str, Any]) -> dict[str, Any]:
    """Run one task on a worker, reusing its result file when it is finished.

    ``inputs`` holds the results of the tasks it needs, by name. Returns what identifies the trained generator
    (gan), the generator record (sampling), {} (pseudo-labels, whose file the classifiers read), or the
    classifier's report row and its rows on each external store.
    """
    torch.set_num_threads(config.task_threads)
    evaluation = Evaluation(store, config, progress=False)
    data = evaluation.cell_data(cell)
    if task.kind == "gan":
        return evaluation.generators.train_generator(cell, evaluation.reference_model(cell, data))
    if task.kind == "sampling":
        return evaluation.generators.prepare_synthetic(cell, evaluation.reference_model(cell, data),
                                                       data.train_images, inputs[Task("gan", task.cell).name])[0]
    if task.kind == "pseudo-labels":
        evaluation.pseudo_labels(cell, data, task.seed)
        return {}
    arm = ARMS[task.arm]
    stores: dict[str, PatchStore] = {}
    if arm.needs_generator:
        stores = recorded_stores(inputs[Task("sampling", task.cell).name]) or {}
        if not stores:
            raise StoreError(cell.directory, "the synthetic stores its sampling task recorded changed before "
                                             f"arm {arm.name} could train on them; rerun to resume")
    row = evaluation.run_arm(cell, data, arm, task.seed, evaluation.extra(cell, data, arm, task.seed, stores))[0]
    return {"row": row, "external": {external.name: evaluation.test_external(cell, data, [row], external)
                                     for external in externals}}


class ImportNetworks(WorkerPlugin):
    """Imports MONAI's networks on every worker, those that join later included, before it runs a task.

    Importing them inside tasks raced with the worker's own thread on a busy machine (CPython 3.11's compiler is
    not safe to run from two threads at once: "AST constructor recursion depth mismatch", then "partially
    initialized module monai.networks.nets" in every later task of that worker).
    """

    name = "bioaug-import-networks"

    def setup(self, worker: Any) -> None:
        import monai.networks.nets  # noqa: F401  (the import is the point)


def _check_gpus(client: Any, config: EvaluateConfig) -> None:
    """With ``device: cuda``, refuse a cluster none of whose workers offers the ``GPU`` resource (its tasks
    would wait for ever)."""
    workers = client.scheduler_info().get("workers", {}).values()
    if config.device == "cuda" and not any(worker.get("resources", {}).get("GPU") for worker in workers):
        raise ConfigError(flag("device"), "cuda, but no Dask worker offers a GPU: start GPU workers with "
                                    "`dask worker ADDRESS --nworkers 1 --nthreads 1 --resources GPU=1`")


def run_on_cluster(client: Any, store: PatchStore, config: EvaluateConfig, cells: list[Cell],
                   externals: list[ExternalSet], work: Path, progress: bool) -> list[CellResult]:
    """Every cell's tasks on the Dask cluster of ``client``, their results in the order of the local path."""
    from distributed import KilledWorker, as_completed

    probe_workers(client, work, __name__, "the work directory")
    _check_gpus(client, config)
    client.register_plugin(ImportNetworks())
    tasks = [task for index in range(len(cells)) for task in cell_tasks(config, index)]
    run = uuid.uuid4().hex[:8]  # Dask keys of this run, apart from any earlier run's on the same scheduler
    futures: dict[str, Any] = {}
    for task in tasks:
        futures[task.name] = client.submit(run_task, task, store, config, cells[task.cell], externals,
                                           {name: futures[name] for name in task.needs},
                                           key=f"{task.name}-{run}", resources=resources(task, config),
                                           pure=False)
    names = {future.key: name for name, future in futures.items()}
    bar = progress_bar(total=len(tasks), desc="evaluate", unit="task", disable=not progress)
    values: dict[str, Any] = {}
    try:
        for future in as_completed(list(futures.values())):
            try:
                values[names[future.key]] = future.result()  # a task's error (one line) stops the run here
            except KilledWorker:
                raise ConfigError("--scheduler", f"Dask task {names[future.key]} was lost with its worker too "
                                                 "often (out of memory?); finished tasks are kept: rerun to "
                                                 "resume") from None
            bar.update(1)
    finally:
        bar.close()
        for future in futures.values():
            future.cancel()
    results: list[CellResult] = []
    for index in range(len(cells)):
        done = {(task.arm, task.seed): values[task.name] for task in tasks
                if task.cell == index and task.kind in ("classifier", "colour")}
        order = [done[(arm, seed)] for seed in config.seeds for arm in arm_order(config)]
        results.append(([value["row"] for value in order], values.get(Task("sampling", index).name),
                        {external.name: [row for value in order for row in value["external"][external.name]]
                         for external in externals}))
    return results
