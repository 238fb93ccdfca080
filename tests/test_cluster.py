"""The Dask connection shared by tile and evaluate: patient timeouts while a client is open, restored after."""
from __future__ import annotations

import pytest

dask = pytest.importorskip("dask")
pytest.importorskip("distributed")

from dask.utils import parse_timedelta  # noqa: E402

from bioaug.cluster import connect, patient_timeouts  # noqa: E402

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
