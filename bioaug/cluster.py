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


#: Seconds Dask waits at least for a connection and for a silent peer while bioaug holds a client. Its 30 s
#: defaults are too short beside torch work on a busy machine: a worker process busy in a GAN step, or slow to
#: start, left the client "lost the connection to the scheduler" after about 30 s, which cancels every task.
PATIENT_TIMEOUTS = {"distributed.comm.timeouts.connect": 300.0, "distributed.comm.timeouts.tcp": 300.0}


#: Dask's background work in the LocalClusters bioaug starts, made rare: by default every worker samples its
#: task's stack every 10 ms (the dashboard's profiler) and every server wakes every 20 ms to measure its event
#: loop. Beside one-thread torch tasks that ran minutes each, the quick profile's client process (scheduler and
#: nannies) took 15% of a core and each worker's own threads 7% of its CPU time, which a budget in CPU
#: seconds pays for. bioaug's tasks run for seconds to hours; nothing here needs the detail.
QUIET_LOCAL_CLUSTER = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
                       "distributed.admin.system-monitor.interval": "2s",
                       "distributed.worker.memory.monitor-interval": "1s"}


def patient_timeouts() -> dict[str, str]:
    """:data:`PATIENT_TIMEOUTS`, each raised to what Dask is already configured with where that is longer."""
    import dask
    from dask.utils import parse_timedelta

    return {key: f"{max(seconds, parse_timedelta(dask.config.get(key, None) or 0, 's')):g}s"
            for key, seconds in PATIENT_TIMEOUTS.items()}


def connect(scheduler: str) -> Any:
    """A context manager yielding a ``dask.distributed.Client`` for ``--scheduler``: an address, or ``local:N``
    for a ``LocalCluster`` of N single-threaded worker processes on this machine (closed with the client).

    While it is open, Dask's connection timeouts are at least :data:`PATIENT_TIMEOUTS`, and a ``LocalCluster``
    keeps its background work rare (:data:`QUIET_LOCAL_CLUSTER`); the worker processes it starts take the same
    settings. A cluster bioaug did not start keeps its own (see README, "Evaluating on a cluster")."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--scheduler", "needs dask.distributed: pip install 'bioaug[dask]'") from None
    count = scheduler.partition(":")[2] if scheduler.startswith("local:") else None
    if count is not None and (not count.isdigit() or int(count) < 1):
        raise ConfigError("--scheduler", f"local:N needs a number of workers N >= 1, got {scheduler!r}")
    settings = dask.config.set({**(QUIET_LOCAL_CLUSTER if count is not None else {}), **patient_timeouts()})
    try:
        if count is not None:
            cluster = LocalCluster(n_workers=int(count), threads_per_worker=1, processes=True,
                                   dashboard_address="127.0.0.1:0", host="127.0.0.1")
            return _ClosingClient(Client(cluster), cluster, settings)
        return _ClosingClient(Client(scheduler, timeout="30s"), None, settings)
    except (OSError, TimeoutError, ValueError) as exc:
        settings.__exit__(None, None, None)
        raise ConfigError("--scheduler", f"cannot reach a Dask scheduler at {scheduler} ({exc})") from None


class _ClosingClient:
    """Context manager yielding a client and closing it (and a cluster it started) afterwards, then restoring
    the Dask settings ``connect`` changed."""

    def __init__(self, client: Any, cluster: Any, settings: Any) -> None:
        self.client, self.cluster, self.settings = client, cluster, settings

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc: object) -> None:
        try:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            self.settings.__exit__(None, None, None)


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
