"""Tiling on a real Dask cluster (a LocalCluster of worker processes on loopback): same store as the local
pool, resume across executors, and a probe that fails before any tiling when workers cannot write the store."""
from __future__ import annotations

import json
import os

import pytest

from bioaug.errors import StoreError
from bioaug.example import write_example_slide
from bioaug.tile import TileConfig, chunks, tile
from tile_helpers import interrupt_after

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def fine_example(tmp_path_factory):
    """An example slide with small tiles, so that a run splits into several chunks."""
    return write_example_slide(tmp_path_factory.mktemp("fine") / "fine.tiff", width=1024, height=1024, seed=5,
                               tile_size=64)


@pytest.fixture(scope="module", autouse=True)
def patient_timeouts(patient_dask_timeouts):
    """Dask waits patiently in every test of this module (see conftest)."""


def local_cluster(workers: int):
    return distributed.LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                                    dashboard_address="127.0.0.1:0", host="127.0.0.1")


@pytest.fixture(scope="module")
def client():
    with local_cluster(2) as cluster, distributed.Client(cluster) as client:
        yield client


def config_for(example, **extra) -> TileConfig:
    return TileConfig(label_by="points", labels=[str(example.nuclei_csv)], region_size=128, qc=False, **extra)


def shard_pids(store) -> set[int]:
    return {json.loads(p.read_text())["pid"] for p in (store / "shards").glob("*/shard.json")}


def test_two_dask_workers_give_the_local_pools_store(fine_example, tmp_path, client):
    local = tile([fine_example.path], tmp_path / "local", config_for(fine_example), progress=False)
    dask = tile([fine_example.path], tmp_path / "dask", config_for(fine_example), client=client, progress=False)
    assert dask.content_hash == local.content_hash
    worker_pids = set(client.run(os.getpid).values())
    assert len(shard_pids(tmp_path / "dask")) == 2 and shard_pids(tmp_path / "dask") <= worker_pids
    assert len(list((tmp_path / "dask" / "shards").iterdir())) >= 4


def test_a_cancelled_run_resumes_on_dask_to_the_same_store(fine_example, tmp_path, client, monkeypatch):
    straight = tile([fine_example.path], tmp_path / "straight", config_for(fine_example), progress=False)
    done: list[str] = []
    monkeypatch.setattr(chunks, "run_chunk", interrupt_after(2, done))
    with pytest.raises(KeyboardInterrupt):
        tile([fine_example.path], tmp_path / "resumed", config_for(fine_example), progress=False)
    monkeypatch.undo()
    assert shard_pids(tmp_path / "resumed") == {os.getpid()}
    resumed = tile([fine_example.path], tmp_path / "resumed", config_for(fine_example), client=client,
                   progress=False)
    assert resumed.content_hash == straight.content_hash
    pids = [json.loads((tmp_path / "resumed" / "shards" / name / "shard.json").read_text())["pid"] for name in done]
    assert pids == [os.getpid()] * 2, "finished shards were redone"


def test_scheduler_local_n_starts_a_cluster(fine_example, tmp_path):
    local = tile([fine_example.path], tmp_path / "local", config_for(fine_example), progress=False)
    dask = tile([fine_example.path], tmp_path / "dask", config_for(fine_example, scheduler="local:2"),
                progress=False)
    assert dask.content_hash == local.content_hash
    assert os.getpid() not in shard_pids(tmp_path / "dask")


class _DieOnceMidShard(distributed.WorkerPlugin):
    """Make the first worker that writes a shard die half-way: its images are saved in the shard's temporary
    directory, the rest is not written and nothing is renamed (the marker file makes it happen once)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker):
        import bioaug.store

        real, marker = bioaug.store.sha256_file, self.marker

        def hash_or_die(path, *args, **kwargs):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return real(path, *args, **kwargs)

        bioaug.store.sha256_file = hash_or_die


def test_a_worker_lost_mid_shard_leaves_no_half_shard(fine_example, tmp_path, client):
    local = tile([fine_example.path], tmp_path / "local", config_for(fine_example), progress=False)
    marker = tmp_path / "died"
    client.register_plugin(_DieOnceMidShard(str(marker)), name="die-once")
    try:
        dask = tile([fine_example.path], tmp_path / "dask", config_for(fine_example), client=client,
                    progress=False)
    finally:
        client.unregister_worker_plugin("die-once")
    assert marker.exists(), "no worker died"
    assert dask.content_hash == local.content_hash
    assert len(dask) == len(local)


class _Unprivileged(distributed.WorkerPlugin):
    """Turn a worker into the unprivileged user 'nobody', for whom the test's store is not writable."""

    def setup(self, worker):
        os.setgid(65534)
        os.setuid(65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a worker as another user")
def test_workers_that_cannot_write_the_store_fail_before_any_tiling(fine_example, tmp_path):
    with local_cluster(1) as cluster, distributed.Client(cluster) as client:
        client.register_plugin(_Unprivileged())
        worker = next(iter(client.scheduler_info()["workers"]))
        with pytest.raises(StoreError) as error:
            tile([fine_example.path], tmp_path / "store", config_for(fine_example), client=client, progress=False)
    message = str(error.value)
    assert "\n" not in message and worker in message and str(tmp_path / "store") in message
    assert "cannot write" in message
    assert not (tmp_path / "store").exists(), "the failed probe left output behind"


def test_a_bad_scheduler_is_a_one_line_error(fine_example, tmp_path):
    from bioaug.errors import ConfigError

    with pytest.raises(ConfigError, match="local:N"):
        tile([fine_example.path], tmp_path / "store", config_for(fine_example, scheduler="local:two"),
             progress=False)
