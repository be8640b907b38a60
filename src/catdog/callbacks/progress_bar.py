"""Lightning's TQDM progress bar, whose bar for an epoch resumed in the middle says which epoch and
how many batches it has: Lightning skips ``on_train_epoch_start`` for that epoch, where the bar
gets both, so it showed "Training: 3/?" instead of "Epoch 1: 3/4"."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar

from catdog.loop_progress import batches_done_this_epoch


class ProgressBar(TQDMProgressBar):
    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        done = batches_done_this_epoch(trainer)
        # A run resumed from an epoch's end has all of it done: the next epoch's start sets its bar.
        if 0 < done < trainer.num_training_batches:
            self.on_train_epoch_start(trainer, pl_module)
            self.train_progress_bar.initial = self.train_progress_bar.n = done  # the rate counts from here
            self.train_progress_bar.refresh()
