"""The one Lightning internal the project reads (catdog.loop_progress): if a Lightning release
moves or renames it, this fails first, naming it, instead of resumed runs silently repeating or
skipping batches."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.demos.boring_classes import BoringModel

from catdog.loop_progress import batches_done_this_epoch


class Record(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, int]] = []  # (epoch, batch_idx, batches done)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Where an orderly stop saves a mid-epoch checkpoint (LastCheckpoint): before this batch.
        self.seen.append((trainer.current_epoch, batch_idx, batches_done_this_epoch(trainer)))


def test_batches_done_counts_the_finished_batches_of_the_current_epoch(tmp_path):
    record = Record()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[record], default_root_dir=tmp_path)
    trainer.fit(BoringModel())
    assert record.seen == [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 0), (1, 1, 1), (1, 2, 2)], (
        "Lightning's fit_loop.epoch_loop.batch_progress.current.completed no longer counts the batches done "
        "this epoch: update catdog/loop_progress.py")
