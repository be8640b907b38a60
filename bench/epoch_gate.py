"""A callback that lets `make bench` time the ceiling between ours' training epochs.

bench/throughput.py adds it to ours' run (`+callbacks.epoch_gate`): at the end of each training
epoch the run writes ``done_<epoch>`` into the gate folder and waits until ``go_<epoch>`` appears,
while the benchmark times a round of the ceiling on the same cores. Ours and its bound then take
turns every few seconds, so the host's speed drift over minutes falls on both alike instead of
between them (bench/RESULTS.md, session 32). It runs after EpochThroughput in the callback list,
so the wait never counts in ours' epoch time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L


class EpochGate(L.Callback):
    def __init__(self, folder: str, timeout_s: float = 900.0) -> None:
        self.folder, self.timeout_s = Path(folder), timeout_s
        self.parent = os.getppid()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        (self.folder / f"done_{epoch}").touch()
        go, start = self.folder / f"go_{epoch}", time.monotonic()
        # Never hang: the benchmark may have died, or stopped waiting.
        while not go.exists() and time.monotonic() - start < self.timeout_s and os.getppid() == self.parent:
            time.sleep(0.01)
