"""How many CPUs this process may really use, for torch's thread pool.

torch sizes its pool from the machine's cores. In a container or a Slurm job limited by a cgroup CPU quota, or
beside other work pinned by ``taskset``, that oversubscribes: ``make demo`` took 12 min 48 s instead of 1 min 47 s
beside two one-thread training processes on two cores. The affinity mask and the quota say what is ours.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT, own_cgroups: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs in this process's affinity mask, capped by the tightest cgroup CPU quota above it (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, own_cgroups)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, own_cgroups: Path = Path("/proc/self/cgroup")
                     ) -> float | None:
    """The tightest CPU quota (in CPUs, e.g. 1.5) of this process's cgroup and its ancestors, v1 or v2;
    None when there is none or it cannot be read."""
    try:
        lines = own_cgroups.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, v2 = (cgroup_root if (cgroup_root / "cgroup.controllers").exists()
                        else cgroup_root / "unified"), True
        elif "cpu" in controllers.split(","):
            base, v2 = cgroup_root / controllers, False
        else:
            continue
        relative = Path(path.lstrip("/"))
        for directory in (base / relative, *(base / parent for parent in relative.parents)):
            quotas.append(_quota(directory, v2))
    found = [quota for quota in quotas if quota is not None]
    return min(found) if found else None


def _quota(directory: Path, v2: bool) -> float | None:
    """One cgroup's CPU quota in CPUs: ``cpu.max`` (v2: "quota period" or "max period") or
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (v1: -1 for none)."""
    try:
        if v2:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        return None if quota <= 0 else quota / int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None
