"""Training speed, logged once per epoch: ``perf/train_images_per_s`` (training batches only,
validation excluded), ``perf/epoch_train_s`` and ``perf/peak_rss_gib`` (the process's peak
resident memory). One device sync per epoch, so it costs nothing measurable."""

from __future__ import annotations

import resource
import sys
import time

import lightning as L
import torch


def peak_rss_gib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20  # bytes on macOS, KiB on Linux


class EpochThroughput(L.Callback):
    def __init__(self) -> None:
        self._start: float | None = None
        self._images = 0

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer, pl_module) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # Lightning skips that hook for an epoch resumed in the middle

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._start, self._images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1])

    def _finish(self, trainer, pl_module) -> None:
        if self._start is None or trainer.sanity_checking:
            return
        self._sync(pl_module)
        seconds = time.perf_counter() - self._start
        self._start = None
        pl_module.log_dict({
            "perf/train_images_per_s": self._images * trainer.world_size / seconds,
            "perf/epoch_train_s": seconds,
            "perf/peak_rss_gib": peak_rss_gib(),
        }, on_epoch=True, rank_zero_only=True)

    # Validation runs inside the training epoch: stop the clock when it starts.
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._finish(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module)
