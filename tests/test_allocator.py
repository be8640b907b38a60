"""train.py keeps the memory a step frees (catdog/allocator.py): a large block freed and taken
again costs no new page faults once the heap has settled, where glibc's default unmaps it and
faults every page back in, step after step."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

STEPS, TAIL = 40, 10
PROGRAM = f"""
import json, resource, sys, torch
from catdog.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():  # one step writes and frees 64 MiB: above glibc's 32 MiB limit for the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 << 20, dtype=torch.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps([faults() for _ in range({STEPS})]))
"""
PAGES = (64 << 20) // 4096  # a step's pages (4 KiB)


def per_step_faults(mode: str) -> list[int]:
    proc = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")
def test_a_freed_large_block_is_reused_without_page_faults():
    # With keep, the heap grows while small objects land between the big blocks (up to 9 steps on
    # the EPYC, varying from run to run, with stray fault-free steps among them), then it holds
    # free blocks for the step and stays there: so judge only the last steps, every one of them.
    default, keep = per_step_faults("default"), per_step_faults("keep")
    assert min(default[-TAIL:]) >= PAGES // 2, default
    assert max(keep[-TAIL:]) < PAGES // 16, keep
