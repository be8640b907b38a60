"""How many processes decode images when the config does not say: one per CPU this process may
use (a SLURM job's share, not the whole node's), at most 16 (beyond that, disk reads bound it)."""

from __future__ import annotations

import os


def default_workers(requested: int | None = None) -> int:
    if requested is not None:
        return max(0, int(requested))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, 16)
