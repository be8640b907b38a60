"""A test-only callback: the training process sends itself a signal at a chosen batch."""

import os
import signal

import lightning as L


class SignalSelf(L.Callback):
    def __init__(self, epoch: int, batch: int, name: str = "SIGTERM") -> None:
        self.epoch, self.batch, self.signal = epoch, batch, getattr(signal, name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signal)


class PoisonWeights(L.Callback):
    """Fill conv1 with NaN before a chosen batch: the loss turns non-finite there."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            pl_module.net.conv1.weight.data.fill_(float("nan"))
