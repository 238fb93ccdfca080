"""bioaug evaluate on a real Dask cluster (a LocalCluster of worker processes on loopback): the same report as
the local run, results that survive a worker killed mid-task, a rerun that recomputes nothing, the task graph
and the plan ``--dry-run`` prints."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bioaug.cli import main
from bioaug.config import build_config
from bioaug.errors import BioaugError, ConfigError
from bioaug.evaluate import generators, protocol
from bioaug.evaluate.config import EvaluateConfig
from bioaug.evaluate.graph import cell_tasks, resources

from conftest import make_disc_store, make_pool_store
from test_protocol import TINY

distributed = pytest.importorskip("distributed")

#: TINY with the arms that exercise every dependency (reference classifier -> gan -> sampling -> selected).
SMALL = {**TINY, "arms": ["real", "classic", "classic+selected", "colour"]}


@pytest.fixture(scope="module", autouse=True)
def patient_timeouts(patient_dask_timeouts):
    """Dask waits patiently in every test of this module (see conftest)."""


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_disc_store(tmp_path_factory.mktemp("store") / "store")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """SMALL with an external test store, whose tests run in the classifier tasks."""
    external = make_disc_store(tmp_path_factory.mktemp("external") / "hospital-b", seed=7, slide_prefix="b-slide",
                               per_class=12)
    return {**SMALL, "external": {"hospital-b": str(external.path)}}


@pytest.fixture(scope="module")
def local_report(store, small, tmp_path_factory) -> dict:
    """report.json of the small evaluation run in this process, the reference every cluster run must match."""
    out = protocol.run_evaluation(store, tmp_path_factory.mktemp("local") / "eval",
                                  build_config(EvaluateConfig, small), progress=False)
    return json.loads((out / "report.json").read_text())


def numbers(report: dict) -> dict:
    """What must not depend on where the work ran: summaries, comparisons and every run less its timing, here
    and on the external store."""
    external = report["external"]["hospital-b"]
    return {"summaries": report["summaries"], "comparisons": report["comparisons"],
            "runs": [{key: value for key, value in run.items() if key != "seconds"} for run in report["runs"]],
            "external": [external["summaries"], external["comparisons"], external["runs"]]}


def results(out: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in (out / "work").glob("fold-*/draw-*/budget-*/results/*.json")}


def test_workers_import_this_checkout(client):
    import bioaug

    assert set(client.run(lambda: __import__("bioaug").__file__).values()) == {bioaug.__file__}


def test_a_local_cluster_writes_the_local_runs_report(store, small, local_report, client, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a classifier was trained in the calling process")
    monkeypatch.setattr(protocol, "train_classifier", refuse)  # workers run their own, unpatched copy
    monkeypatch.setattr(generators, "train_gan", refuse)
    out = protocol.run_evaluation(store, tmp_path / "eval", build_config(EvaluateConfig, small), client=client,
                                  progress=False)
    assert len(local_report["external"]["hospital-b"]["runs"]) == 2 * len(SMALL["arms"])  # two budgets
    assert numbers(json.loads((out / "report.json").read_text())) == numbers(local_report)
    assert not list((tmp_path / "eval" / "work").glob(".probe-*")), "the worker probe left its file"
    # every worker imported MONAI's networks before its first task (importing them in tasks raced, see plugin)
    imported = client.run(lambda dask_worker: "monai.networks.nets" in __import__("sys").modules
                          and "bioaug-import-networks" in dask_worker.plugins)
    assert all(imported.values()), imported


def test_the_command_line_with_scheduler_local_n_writes_the_same_report(store, small, local_report, tmp_path,
                                                                       capsys):
    config = tmp_path / "evaluate.json"
    config.write_text(json.dumps(small))
    assert main(["evaluate", str(store.path), "--out", str(tmp_path / "eval"), "--config", str(config),
                 "--scheduler", "local:1", "--quiet"]) == 0
    assert f"report: {tmp_path / 'eval' / 'report.md'}" in capsys.readouterr().out
    assert numbers(json.loads((tmp_path / "eval" / "report.json").read_text())) == numbers(local_report)


class _DieOnceWritingAResult(distributed.WorkerPlugin):
    """Make the first worker that writes a classifier's result die half-way through writing it: half the JSON
    is in the temporary file, nothing is renamed (the marker file makes it happen once)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker):
        from bioaug.evaluate import protocol as worker_protocol
        from bioaug.provenance import atomic_path

        real, marker = worker_protocol.write_json_atomic, self.marker

        def write_or_die(path, value):
            if Path(path).parent.name == "results" and not os.path.exists(marker):
                open(marker, "w").close()
                text = json.dumps(value)
                with atomic_path(path) as tmp:
                    Path(tmp).write_text(text[:len(text) // 2])
                    os._exit(1)
            return real(path, value)

        worker_protocol.write_json_atomic = write_or_die


def test_a_worker_killed_mid_task_leaves_no_half_result_and_a_rerun_recomputes_nothing(store, small, local_report,
                                                                                          client, tmp_path):
    marker = tmp_path / "died"
    client.register_plugin(_DieOnceWritingAResult(str(marker)), name="die-once")
    config = build_config(EvaluateConfig, small)
    try:
        out = protocol.run_evaluation(store, tmp_path / "eval", config, client=client, progress=False)
    finally:
        client.unregister_worker_plugin("die-once")
    assert marker.exists(), "no worker died"
    for path in results(out):
        json.loads(path.read_text())  # every result file is whole
    assert list((out / "work").glob("fold-*/draw-*/budget-*/results/.*.tmp")), "the half-written file is not there"
    assert numbers(json.loads((out / "report.json").read_text())) == numbers(local_report)

    before = results(out)
    out = protocol.run_evaluation(store, tmp_path / "eval", config, client=client, progress=False)
    assert results(out) == before, "a finished task was recomputed"
    assert numbers(json.loads((out / "report.json").read_text())) == numbers(local_report)


def test_a_task_that_keeps_killing_its_worker_is_a_one_line_error_and_the_rerun_finishes(store, small,
                                                                                            local_report, tmp_path):
    import dask

    marker = tmp_path / "died"
    config = build_config(EvaluateConfig, small)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                                     dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        client.register_plugin(_DieOnceWritingAResult(str(marker)), name="die-once")
        with pytest.raises(ConfigError, match="was lost with its worker too often.*rerun to resume") as error:
            protocol.run_evaluation(store, tmp_path / "eval", config, client=client, progress=False)
        client.unregister_worker_plugin("die-once")
        assert "\n" not in str(error.value) and not (tmp_path / "eval" / "report.json").exists()
        client.wait_for_workers(1)  # the nanny restarts the killed worker
        out = protocol.run_evaluation(store, tmp_path / "eval", config, client=client, progress=False)
    assert numbers(json.loads((out / "report.json").read_text())) == numbers(local_report)


class _FailOnce(distributed.WorkerPlugin):
    """Make the first classifier training on a worker fail, as a task interrupted by an error would."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker):
        from bioaug.evaluate import protocol as worker_protocol

        real, marker = worker_protocol.train_classifier, self.marker

        def fail_once(*args, **kwargs):
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise BioaugError(None, "interrupted on purpose")
            return real(*args, **kwargs)

        worker_protocol.train_classifier = fail_once


def test_an_interrupted_run_stops_with_the_tasks_error_and_the_rerun_finishes_it(store, small, local_report,
                                                                                client, tmp_path):
    marker = tmp_path / "failed"
    client.register_plugin(_FailOnce(str(marker)), name="fail-once")
    config = build_config(EvaluateConfig, small)
    try:
        with pytest.raises(BioaugError, match="interrupted on purpose"):
            protocol.run_evaluation(store, tmp_path / "eval", config, client=client, progress=False)
    finally:
        client.unregister_worker_plugin("fail-once")
    assert not (tmp_path / "eval" / "report.json").exists()
    out = protocol.run_evaluation(store, tmp_path / "eval", config, client=client, progress=False)
    assert numbers(json.loads((out / "report.json").read_text())) == numbers(local_report)


def test_cuda_without_gpu_workers_is_a_one_line_error_before_any_task(store, client, tmp_path):
    config = build_config(EvaluateConfig, {**SMALL, "device": "cuda"})
    with pytest.raises(ConfigError, match="--device: cuda, but no Dask worker offers a GPU.*--resources GPU=1") as error:
        protocol.run_evaluation(store, tmp_path / "eval", config, client=client, progress=False)
    assert "\n" not in str(error.value) and not (tmp_path / "eval" / "work" / "fold-0" / "draw-0" / "budget-0.50" /
                                                 "results").exists()


def test_a_bad_scheduler_is_a_one_line_error(store, tmp_path):
    with pytest.raises(ConfigError, match="local:N") as error:
        protocol.run_evaluation(store, tmp_path / "eval", build_config(EvaluateConfig, {
            **SMALL, "scheduler": "local:two"}), progress=False)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("arms, expected", [
    (["real", "colour"], {"classifier-cell-0-real-seed-0": (), "colour-cell-0-colour-seed-0": ()}),
    (["real", "classic+selected"], {"classifier-cell-0-real-seed-0": (),
                                    "gan-cell-0": ("classifier-cell-0-real-seed-0",),
                                    "sampling-cell-0": ("gan-cell-0",),
                                    "classifier-cell-0-classic+selected-seed-0": ("sampling-cell-0",)}),
    (["selected"], {"gan-cell-0": (),  # the reference classifier (real) is trained inside it
                    "sampling-cell-0": ("gan-cell-0",), "classifier-cell-0-selected-seed-0": ("sampling-cell-0",)}),
    (["classic", "pseudo_label+selected"], {
        "classifier-cell-0-classic-seed-0": (), "gan-cell-0": ("classifier-cell-0-classic-seed-0",),
        "sampling-cell-0": ("gan-cell-0",), "pseudo-labels-cell-0-seed-0": ("classifier-cell-0-classic-seed-0",),
        "classifier-cell-0-pseudo_label+selected-seed-0": ("sampling-cell-0", "pseudo-labels-cell-0-seed-0")}),
])
def test_each_task_waits_for_what_it_reads(arms, expected):
    tasks = cell_tasks(EvaluateConfig(arms=arms, seeds=[0]), 0)
    assert {task.name: task.needs for task in tasks} == expected
    names = [task.name for task in tasks]
    assert all(names.index(need) < names.index(task.name) for task in tasks for need in task.needs)


KINDS = ("classifier", "gan", "sampling", "pseudo-labels", "colour")


@pytest.mark.parametrize("device, asked", [("cuda", {**dict.fromkeys(KINDS, {"GPU": 1}), "colour": None}),
                                           ("cpu", dict.fromkeys(KINDS)), ("auto", dict.fromkeys(KINDS))])
def test_torch_tasks_ask_for_a_gpu_only_when_the_device_is_cuda(device, asked):
    config = EvaluateConfig(arms=["classic", "pseudo_label", "classic+selected", "colour"], seeds=[0],
                            device=device)
    assert {task.kind: resources(task, config) for task in cell_tasks(config, 0)} == asked


def test_dry_run_prints_the_tasks_of_each_kind_and_their_time(store, tmp_path, capsys):
    pool = make_pool_store(tmp_path / "pool", store)
    config = tmp_path / "profile.json"
    config.write_text(json.dumps({**TINY, "budgets": [0.5], "seeds": [0, 1], "unlabelled": str(pool.path),
                                  "arms": ["real", "classic", "pseudo_label", "classic+selected", "colour"]}))
    assert main(["evaluate", str(store.path), "--out", str(tmp_path / "eval"), "--config", str(config),
                 "--dry-run"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["seeds"] == [0, 1]  # stdout is still the resolved config alone
    lines = {line.split()[0]: line.split() for line in printed.err.splitlines()[1:]}
    assert {kind: int(line[1]) for kind, line in lines.items()} == {
        "classifier": 8, "colour": 2, "pseudo-labels": 2, "gan": 1, "sampling": 1, "total": 14}
    assert printed.err.startswith("plan: 1 cell(s), 14 tasks") and not (tmp_path / "eval").exists()


class _OtherVersion(distributed.WorkerPlugin):
    """Make the workers report another bioaug version, as workers with an older install would."""

    def setup(self, worker):
        import bioaug

        self.version, bioaug.__version__ = bioaug.__version__, "0.0.0-other"

    def teardown(self, worker):
        import bioaug

        bioaug.__version__ = self.version


def test_workers_with_another_bioaug_version_are_refused_before_any_task(store, client, tmp_path):
    client.register_plugin(_OtherVersion(), name="other-version")
    try:
        with pytest.raises(BioaugError, match="runs bioaug 0.0.0-other, this process") as error:
            protocol.run_evaluation(store, tmp_path / "eval", build_config(EvaluateConfig, SMALL), client=client,
                                    progress=False)
    finally:
        client.unregister_worker_plugin("other-version")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "eval" / "work") in message and "Dask worker tcp://" in message
    assert not list((tmp_path / "eval" / "work").glob("fold-*/draw-*/budget-*/results"))
