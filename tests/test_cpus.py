"""The CPUs torch may use (issue 19.11): the affinity mask, capped by a cgroup CPU quota, v1 or v2."""
from __future__ import annotations

import os
import pytest

from bioaug.cpus import available_cpus, cgroup_cpu_quota


def _cgroups(tmp_path, own: str, files: dict[str, str]):
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "own").write_text(own)
    return root, tmp_path / "own"


@pytest.mark.parametrize("own, files, quota", [
    ("0::/job\n", {"cgroup.controllers": "cpu\n", "job/cpu.max": "150000 100000\n"}, 1.5),
    ("0::/job/step\n", {"cgroup.controllers": "cpu\n", "job/cpu.max": "100000 100000\n",
                        "job/step/cpu.max": "max 100000\n"}, 1.0),  # a parent's quota binds its children
    ("0::/\n", {"cgroup.controllers": "cpu\n", "cpu.max": "max 100000\n"}, None),
    ("1:cpu,cpuacct:/docker/a\n0::/\n", {"cpu,cpuacct/docker/a/cpu.cfs_quota_us": "300000\n",
                                         "cpu,cpuacct/docker/a/cpu.cfs_period_us": "100000\n"}, 3.0),
    ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
])
def test_the_cgroup_cpu_quota_is_read_from_v1_and_v2(tmp_path, own, files, quota):
    root, own_file = _cgroups(tmp_path, own, files)
    assert cgroup_cpu_quota(root, own_file) == quota


def test_available_cpus_are_the_affinity_mask_capped_by_the_quota(tmp_path):
    mask = len(os.sched_getaffinity(0))
    root, own = _cgroups(tmp_path, "0::/\n", {"cgroup.controllers": "cpu\n", "cpu.max": "50000 100000\n"})
    assert available_cpus(root, own) == 1  # half a CPU is still one thread
    root, own = _cgroups(tmp_path / "free", "0::/\n", {"cgroup.controllers": "cpu\n", "cpu.max": "max 100000\n"})
    assert available_cpus(root, own) == mask
    assert available_cpus(tmp_path / "none", tmp_path / "missing") == mask


def test_the_command_sizes_torch_threads_to_the_available_cpus_unless_told(monkeypatch):
    """Set before torch is imported, through OMP_NUM_THREADS, which torch reads when its pool starts."""
    import bioaug.cli

    monkeypatch.setattr(bioaug.cli, "available_cpus", lambda: 3)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    bioaug.cli.main(["verify", "/nonexistent", "--quiet"])
    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert os.environ["GOMP_SPINCOUNT"] == "10000"  # idle threads soon sleep: they do not spin beside other work
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT")
    bioaug.cli.main(["verify", "/nonexistent", "--quiet"])
    assert (os.environ["OMP_NUM_THREADS"], os.environ["OMP_WAIT_POLICY"]) == ("2", "ACTIVE")
    assert "GOMP_SPINCOUNT" not in os.environ  # the user's waiting policy is theirs
