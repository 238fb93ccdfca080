"""Dask clusters for the stages that spread over machines (tile's chunks, evaluate's task graph).

One place connects to a scheduler (an address, or ``local:N`` for a ``LocalCluster`` on this machine) and checks
its workers before any work is submitted: each must import bioaug in this process's version and write a probe
file into the run's directory at the same path, or the run stops with one line naming the worker and the path.
``dask.distributed`` is imported only here and only when a function needs it.
"""
from __future__ import annotations

import importlib
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, StoreError


def connect(scheduler: str) -> Any:
    """A context manager yielding a ``dask.distributed.Client`` for ``--scheduler``: an address, or ``local:N``
    for a ``LocalCluster`` of N single-threaded worker processes on this machine (closed with the client)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--scheduler", "needs dask.distributed: pip install 'bioaug[dask]'") from None
    if scheduler.startswith("local:"):
        count = scheduler.partition(":")[2]
        if not count.isdigit() or int(count) < 1:
            raise ConfigError("--scheduler", f"local:N needs a number of workers N >= 1, got {scheduler!r}")
        cluster = LocalCluster(n_workers=int(count), threads_per_worker=1, processes=True,
                               dashboard_address="127.0.0.1:0", host="127.0.0.1")
        return _ClosingClient(Client(cluster), cluster)
    try:
        return _ClosingClient(Client(scheduler, timeout="30s"), None)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError("--scheduler", f"cannot reach a Dask scheduler at {scheduler} ({exc})") from None


class _ClosingClient:
    """Context manager yielding a client and closing it (and a cluster it started) afterwards."""

    def __init__(self, client: Any, cluster: Any) -> None:
        self.client, self.cluster = client, cluster

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def worker_memory(client: Any) -> float | None:
    """The smallest memory limit among the cluster's workers (bytes), or None when they set none."""
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info().get("workers", {}).values()]
    return float(min(limits)) if limits and min(limits) > 0 else None


def _probe(directory: str, module: str) -> tuple[str, str]:
    """Run on a worker: import ``module`` (what its tasks run from) and create, then remove, a file in
    ``directory``; returns (this worker's bioaug version, a problem or "")."""
    importlib.import_module(module)
    import bioaug

    probe = Path(directory) / f".probe-{socket.gethostname()}-{os.getpid()}"
    try:
        probe.write_text("bioaug worker probe\n")
        probe.unlink()
    except OSError as exc:
        return bioaug.__version__, f"cannot write to {probe.parent} ({exc.strerror or exc})"
    return bioaug.__version__, ""


def probe_workers(client: Any, directory: Path, module: str, what: str) -> None:
    """Check that every Dask worker imports ``module`` with this bioaug version and can write into
    ``directory`` (``what`` names it in the error, e.g. "the store"); one-line ``StoreError`` otherwise.

    ``directory`` is created for the probe and, with any parents that were new, removed again afterwards, so a
    failed probe leaves nothing behind.
    """
    workers = sorted(client.scheduler_info().get("workers", {}))
    if not workers:
        raise ConfigError("--scheduler", "the Dask cluster has no workers")
    directory = directory.resolve()
    created = next((path for path in reversed([directory, *directory.parents]) if not path.exists()), None)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        results = client.run(_probe, str(directory), module, on_error="return")
        for worker in workers:
            _check_probe(worker, results.get(worker), directory, what)
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


def _check_probe(worker: str, result: Any, directory: Path, what: str) -> None:
    """Raise the one-line error for a worker whose probe did not come back as (this version, no problem)."""
    if result is None:
        problem = "did not answer the probe"
    elif isinstance(result, BaseException):
        problem = (f"cannot import bioaug ({type(result).__name__}: {result}); install bioaug on every worker"
                   if isinstance(result, ImportError) else f"probe failed ({type(result).__name__}: {result})")
    elif result[0] != __version__:
        problem = f"runs bioaug {result[0]}, this process {__version__}; install the same version on every worker"
    elif result[1]:
        problem = f"{result[1]}; {what} must be on a filesystem every worker can write at the same path"
    else:
        return
    raise StoreError(directory, f"Dask worker {worker}: {problem}")
