"""Keep the memory a training step frees for the next step, instead of handing it back to the kernel.

glibc serves every block above 32 MiB (a 64-image batch's activations from about 80 px up) with
a mapping of its own and unmaps it on free, so every step faults its activations back in, page by
page: at 96 px on 2 cores of the EPYC, the kernel took a third of the training process's CPU time
(bench/RESULTS.md). With those mappings off and the heap never trimmed, the next step reuses the
same pages. The price is memory: freed blocks stay resident, and where small objects landed
between them a step may not fit in the gaps at first, so the heap grows for a few steps before
it settles (a bare 96 px step's peak: 1.71 GiB instead of 1.33). Linux with glibc only;
elsewhere nothing changes.

`keep_freed_memory: true` still trims a free top of the heap above 2 GiB (BOUNDED_TRIM): a 224 px
step of the default network frees more than that at once, so glibc hands it back now and then and
faults it in again (train.py at 224 px on the EPYC: 2.4-19 million page faults in two epochs, 2.5-10%
of its CPU in the kernel; bench/RESULTS.md, session 22). NEVER_TRIM (`never`, the default) closes
that too (0.3-0.6% in the kernel) at the same peak memory (5.4-6.1 GiB against 4.8-6.6 bounded):
its heap holds its peak where the bounded one falls and climbs back. It grows by an aligned block
now and then before it settles (8 epochs at 224 px: 5.34 GiB from the first epoch on, 5.41 at the
end); a whole 40-epoch run at that size is not yet measured.

eval.py, predict.py, cam.py and map_report.py set it too (their configs' `keep_freed_memory`): batch
after batch they free and take the same large blocks: on 2 cores of a Zen 4, with the network
channels-last, 224 px images were scored 5.3x faster, mapped 4.4x (bench/RESULTS.md, session 43).
"""

from __future__ import annotations

import ctypes
import sys

from catdog.errors import UserError

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
BOUNDED_TRIM = 2**31 - 1  # trim only a free top of 2 GiB or more
NEVER_TRIM = -1  # glibc reads the threshold as an unsigned size: -1 is the largest


def keep_freed_memory(trim_threshold: int) -> bool:
    """Tell glibc's malloc to serve large blocks from the heap and trim its top only above
    `trim_threshold` bytes; whether it took."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # absent from musl
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))


SETTINGS = {"never": NEVER_TRIM, True: BOUNDED_TRIM}  # the configs' keep_freed_memory; false: glibc's own


def apply_keep_freed_memory(setting: bool | str | None) -> bool:
    """A command's `keep_freed_memory` (conf/train.yaml, eval.yaml, ...: true, "never" or false) put into effect;
    whether it took."""
    if setting is False or setting is None:
        return False
    if not isinstance(setting, (bool, str)) or setting not in SETTINGS:
        raise UserError(f"keep_freed_memory={setting}: use never (the default), true (trim a freed top above 2 GiB) or false (glibc's default)")
    return keep_freed_memory(SETTINGS[setting])
