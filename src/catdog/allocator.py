"""Keep the memory a training step frees for the next step, instead of handing it back to the kernel.

glibc serves every block above 32 MiB (a 64-image batch's activations from about 80 px up) with
a mapping of its own and unmaps it on free, so every step faults its activations back in, page by
page: at 96 px on 2 cores of the EPYC, the kernel took a third of the training process's CPU time
(bench/RESULTS.md). With those mappings off and the heap never trimmed, the next step reuses the
same pages. The price is memory: freed blocks stay resident, and where small objects landed
between them a step may not fit in the gaps at first, so the heap grows for a few steps before
it settles (a bare 96 px step's peak: 1.71 GiB instead of 1.33). Linux with glibc only;
elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve large blocks from the heap and never trim it; whether it took."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # absent from musl
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
