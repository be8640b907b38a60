"""Lightning's TQDM progress bar, with two changes.

- Where the output is not a terminal (a SLURM job's log, ``nohup``, ``> train.log``), each refresh of
  the bar is written into the log: a carriage-returned update every batch, megabytes a run, unreadable.
  There (``lines_when_piped``) the bar stays off and each epoch ends in one log line instead, with the
  metrics the bar would show, in the console and in the run folder's ``train.log``.
- The bar of an epoch resumed in the middle says which epoch and how many batches it has: Lightning
  skips ``on_train_epoch_start`` for that epoch, where the bar gets both, so it showed "Training: 3/?"
  instead of "Epoch 1: 3/4".
"""

from __future__ import annotations

import logging
import sys
import time

from lightning.pytorch.callbacks import TQDMProgressBar

from catdog.loop_progress import batches_done_this_epoch

log = logging.getLogger("catdog.progress")


class ProgressBar(TQDMProgressBar):
    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False,
                 lines_when_piped: bool = True) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.lines_when_piped = lines_when_piped
        self._lines = False
        self._epoch_start: float | None = None
        self._validated_epoch: int | None = None
        self._finished: tuple[int, float | None, bool] | None = None  # (epoch, seconds, validated) not yet logged

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Lightning's bars write to stdout, the stream that is or is not a terminal.
        self._lines = self.lines_when_piped and not sys.stdout.isatty()
        if self._lines:
            self.disable()

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        done = batches_done_this_epoch(trainer)
        # A run resumed from an epoch's end has all of it done: the next epoch's start sets its bar.
        if 0 < done < trainer.num_training_batches:
            self.on_train_epoch_start(trainer, pl_module)
            self.train_progress_bar.initial = self.train_progress_bar.n = done  # the rate counts from here
            self.train_progress_bar.refresh()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._log_finished_epoch(trainer, pl_module)
        super().on_train_epoch_start(trainer, pl_module)
        self._epoch_start = time.monotonic()

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # The module logs the epoch's training metrics in its own on_train_epoch_end, which Lightning
        # calls after the callbacks': the line is written at the next epoch's start, or the run's end.
        took = time.monotonic() - self._epoch_start if self._epoch_start is not None else None
        self._finished = (trainer.current_epoch, took, self._validated_epoch == trainer.current_epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self._log_finished_epoch(trainer, pl_module)

    def _log_finished_epoch(self, trainer, pl_module) -> None:
        if self._finished is not None and self._lines and trainer.is_global_zero:
            log.info(self.epoch_line(trainer, pl_module, *self._finished))
        self._finished = None

    def epoch_line(self, trainer, pl_module, epoch: int, took: float | None, validated: bool) -> str:
        """``Epoch 2/39 (4.1 s): train/loss 0.652, val/acc 0.655, ...``: numbered as the bar, the checkpoints
        and TensorBoard's steps are, from 0; validation's metrics only for an epoch that was validated
        (``check_val_every_n_epoch``), never an earlier epoch's again."""
        last = trainer.max_epochs
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items()
                   if k != "v_num" and (validated or not k.startswith("val"))}
        head = f"Epoch {epoch}/{last - 1}" if last is not None and last > 0 else f"Epoch {epoch}"
        ordered = sorted(metrics.items(), key=lambda kv: not kv[0].startswith("train"))  # training's first, as logged
        values = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in ordered)
        return f"{head}{f' ({took:.1f} s)' if took is not None else ''}: {values}"
