"""The Dask connection shared by tile and evaluate: patient timeouts while a client is open, restored after."""
from __future__ import annotations

import pytest

dask = pytest.importorskip("dask")
pytest.importorskip("distributed")

from dask.utils import parse_timedelta  # noqa: E402

from bioaug.cluster import QUIET_LOCAL_CLUSTER, connect, patient_timeouts  # noqa: E402

TCP, CONNECT = "distributed.comm.timeouts.tcp", "distributed.comm.timeouts.connect"


def _tcp_timeout() -> str:
    import dask

    return dask.config.get("distributed.comm.timeouts.tcp")


def test_a_client_waits_five_minutes_on_a_busy_machine_and_its_workers_too():
    with dask.config.set({TCP: "30s", CONNECT: "45s"}):
        with connect("local:1") as client:
            assert parse_timedelta(dask.config.get(TCP)) == 300
            assert parse_timedelta(dask.config.get(CONNECT)) == 300
            on_workers = client.run(_tcp_timeout)
            assert on_workers and all(parse_timedelta(value) == 300 for value in on_workers.values())
        assert (dask.config.get(TCP), dask.config.get(CONNECT)) == ("30s", "45s")


def test_a_longer_timeout_the_user_set_is_kept():
    with dask.config.set({TCP: "15 minutes", CONNECT: "10s"}):
        assert patient_timeouts() == {TCP: "900s", CONNECT: "300s"}


def _background_settings() -> tuple:
    import dask

    return tuple(dask.config.get(key) for key in QUIET_LOCAL_CLUSTER)


def test_a_local_cluster_and_its_workers_keep_dask_background_work_rare():
    before = _background_settings()
    assert before[0] is True  # Dask's default: the profiler samples every task's stack
    with connect("local:1") as client:
        on_workers = client.run(_background_settings)
        assert on_workers and all(value == tuple(QUIET_LOCAL_CLUSTER.values()) for value in on_workers.values())
        assert client.run_on_scheduler(_background_settings) == tuple(QUIET_LOCAL_CLUSTER.values())
    assert _background_settings() == before
