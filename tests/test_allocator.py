"""train.py keeps the memory a step frees (catdog/allocator.py): a large block freed and taken
again costs no new page faults, where glibc's default unmaps it and faults every page back in."""

from __future__ import annotations

import subprocess
import sys

import pytest

WARMUP_CAP = 40
PROGRAM = f"""
import resource, sys, torch
from catdog.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults(steps):  # each step writes and frees 64 MiB: above glibc's 32 MiB limit for the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        torch.ones(64 << 20, dtype=torch.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
# The heap grows until it holds a free block for the step wherever small objects landed: 4 to 9
# steps on the EPYC, varying from run to run, so warm up until one step faults under a 16th of
# its pages (the default never gets there), then count three steps.
settled = any(faults(1) < 1024 for _ in range({WARMUP_CAP}))
print(settled, faults(3))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")
def test_a_freed_large_block_is_reused_without_page_faults():
    settled, faults = {}, {}
    for mode in ("default", "keep"):
        proc = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        flag, count = proc.stdout.split()[-2:]
        settled[mode], faults[mode] = flag == "True", int(count)
    assert settled["keep"], f"the heap still grew after {WARMUP_CAP} steps"
    assert faults["default"] >= 3 * 32  # each step faults its 64 MiB back in (4 KiB pages: 16,384 per step)
    assert faults["keep"] * 20 < faults["default"], faults
