"""The CPU cores this process may use: its affinity mask (a Slurm task bound to its allocation sees only those),
capped by Slurm's --cpus-per-task where the cluster does not bind tasks to cores (task/none).

    from utils.cpus import allotted_cpus
    threads = allotted_cpus()     # not os.cpu_count(): a cluster node's cores are shared among jobs
"""
from __future__ import annotations

import os


def allotted_cpus() -> int:
    """len(os.sched_getaffinity(0)), at most SLURM_CPUS_PER_TASK when that is set (issue 27: a stage inside a
    Slurm task uses the job's allocation, not the node's cores)."""
    cores = len(os.sched_getaffinity(0))
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return max(1, min(cores, int(per_task))) if per_task.isdigit() else cores
