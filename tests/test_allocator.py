"""train.py keeps the memory a step frees (catdog/allocator.py): a large block freed and taken
again costs no new page faults, where glibc's default unmaps it and faults every page back in."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys, torch
from catdog.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():  # 64 MiB written and freed: above glibc's 32 MiB limit for serving a block from the heap
    torch.ones(64 << 20, dtype=torch.uint8)
for _ in range(8):  # until the heap holds free blocks enough for the step wherever small objects landed
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")
def test_a_freed_large_block_is_reused_without_page_faults():
    faults = {}
    for mode in ("default", "keep"):
        proc = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        faults[mode] = int(proc.stdout.split()[-1])
    assert faults["default"] >= 3 * 32  # each step faults its 64 MiB back in (4 KiB pages: 16,384 per step)
    assert faults["keep"] * 20 < faults["default"], faults
