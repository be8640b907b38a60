"""Keep what an interrupted run has learned.

SIGTERM (Lightning stops after the current batch) and Ctrl-C (caught here, and turned into
the same orderly stop before the next batch; a second Ctrl-C stops at once) save ``last.ckpt``
where the run stands, mid-epoch included. ``ckpt_path=last`` then resumes it, and with the
cached data path the resumed run repeats the uninterrupted one exactly: the batch order,
augmentation and dropout of each step depend on (seed, epoch, step) only.

Only orderly stops save: a run that failed (a non-finite loss, a second Ctrl-C in the middle
of a step) keeps its last good checkpoint rather than overwriting it with doubtful weights.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class InterruptCheckpoint(L.Callback):
    def __init__(self) -> None:
        self._stop_requested = False
        self._previous_handler = None

    # -- Ctrl-C: stop between two batches, not in the middle of one ----------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_ctrl_c)

    def _on_ctrl_c(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt  # a second press: stop now, keep the last saved checkpoint
        self._stop_requested = True
        log.warning("Ctrl-C: stopping before the next batch and saving last.ckpt (press Ctrl-C again to stop at once)")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Here the previous batch is fully done and counted, and this one not started.
        if self._stop_requested:
            raise SIGTERMException(128 + signal.SIGINT)

    def _restore_handler(self) -> None:
        if self._previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore_handler()

    # -- saving on an orderly stop ----------------------------------------------------------------

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handler()
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        folder = Path(checkpoint.dirpath) if checkpoint is not None and checkpoint.dirpath else Path(trainer.default_root_dir)
        path = folder / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # to a temporary file, then renamed: never half a file
        if trainer.is_global_zero:
            log.warning("interrupted at epoch %d, step %d: saved %s; resume with ckpt_path=last (or ckpt_path=%s)",
                        trainer.current_epoch, trainer.global_step, path, path)
