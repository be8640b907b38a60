"""An epoch resumed in the middle, which Lightning starts without ``on_train_epoch_start``: its
progress bar names the epoch and its batches, and its speed is logged, as every other epoch's."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from torch.utils.data import DataLoader, TensorDataset

from catdog.callbacks.progress_bar import ProgressBar
from catdog.callbacks.throughput import EpochThroughput


class SaveBeforeBatch(L.Callback):
    """A checkpoint where an orderly stop saves one mid-epoch (LastCheckpoint): before a batch."""

    def __init__(self, path, epoch: int, batch: int) -> None:
        self.path, self.epoch, self.batch = path, epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            trainer.save_checkpoint(self.path)


class SaveAtEpochEnd(L.Callback):
    """The checkpoint LastCheckpoint saves at an epoch's end."""

    def __init__(self, path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)


class BarAtStart(L.Callback):
    def __init__(self, bar: ProgressBar) -> None:
        self.bar, self.seen = bar, None

    def on_train_start(self, trainer, pl_module) -> None:
        progress = self.bar.train_progress_bar
        self.seen = (progress.desc.rstrip(": "), progress.total, progress.n)


class ImagesAndLabels(BoringModel):
    """Batches of (inputs, labels), as the project's are."""

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(64, 32), torch.zeros(64)), batch_size=16)

    def training_step(self, batch, batch_idx):
        return super().training_step(batch[0], batch_idx)


def fit(tmp_path, *callbacks, ckpt_path=None) -> L.Trainer:
    trainer = L.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=list(callbacks), default_root_dir=tmp_path)
    trainer.fit(ImagesAndLabels(), ckpt_path=ckpt_path)
    return trainer


def test_resumed_mid_epoch_bar_names_the_epoch_its_total_and_the_batches_done(tmp_path):
    ckpt = tmp_path / "mid.ckpt"
    fit(tmp_path, ProgressBar(), SaveBeforeBatch(ckpt, epoch=1, batch=2))
    bar = ProgressBar(lines_when_piped=False)  # the bar itself, under pytest's captured output too
    look = BarAtStart(bar)
    fit(tmp_path, bar, look, ckpt_path=ckpt)
    assert look.seen == ("Epoch 1", 4, 2)


def test_bar_of_a_run_resumed_at_an_epoch_end_is_left_to_the_next_epoch(tmp_path):
    ckpt = tmp_path / "end.ckpt"
    fit(tmp_path, ProgressBar(), SaveAtEpochEnd(ckpt))
    bar = ProgressBar(lines_when_piped=False)  # the bar itself, under pytest's captured output too
    look = BarAtStart(bar)
    fit(tmp_path, bar, look, ckpt_path=ckpt)
    assert look.seen[0] == "Training" and look.seen[2] == 0


def test_resumed_mid_epoch_logs_the_epochs_speed(tmp_path):
    ckpt = tmp_path / "mid.ckpt"
    fit(tmp_path, SaveBeforeBatch(ckpt, epoch=1, batch=2))
    resumed = fit(tmp_path, EpochThroughput(), ckpt_path=ckpt)  # trains the last two batches of epoch 1 alone
    assert {"perf/train_images_per_s", "perf/epoch_train_s"} <= set(resumed.callback_metrics)
