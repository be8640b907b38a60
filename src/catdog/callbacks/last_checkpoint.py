"""Keep ``checkpoints/last.ckpt``: what ``ckpt_path=last`` resumes.

It is saved at the end of training, when the run is stopped in an orderly way (below), and at
the end of an epoch unless the next epoch, if it lasts as long as this one, still ends within
``every_minutes`` of the last save. So saves come at most ``every_minutes`` apart where epochs
are shorter (a fast run does not spend its time writing checkpoints), and after every epoch
where they are longer: a run killed outright (SIGKILL, a power cut) loses at most
``every_minutes`` or one epoch of work, whichever is longer, as long as epochs keep about the
same length. ``every_minutes=0`` saves after every epoch. The orderly stops:

- SIGTERM: Lightning stops after the current batch;
- Ctrl-C: caught here and turned into the same orderly stop before the next batch (a second
  Ctrl-C stops at once).

Mid-epoch saves included, the resumed run repeats the uninterrupted one exactly on the cached
data path: the batch order, augmentation and dropout of a step depend on (seed, epoch, step)
only. A run that failed (a non-finite loss, a second Ctrl-C in the middle of a step) keeps the
last good checkpoint rather than overwriting it with doubtful weights.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class LastCheckpoint(L.Callback):
    def __init__(self, dirpath: str, every_minutes: float = 10.0) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_s = every_minutes * 60
        self._stop_requested = False
        self._saved_step = -1
        self._previous_handler = None
        self._last_save = self._epoch_end = time.monotonic()

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run:  # a smoke test (debug=default) trains nothing worth resuming, as Lightning's own saver agrees
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # a temporary file, then renamed: never half a file
        self._last_save = time.monotonic()
        self._saved_step = trainer.global_step

    # -- periodic and final saves ---------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_save = self._epoch_end = time.monotonic()
        self._stop_requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_ctrl_c)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.monotonic()
        epoch_s, self._epoch_end = now - self._epoch_end, now
        final = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        if final or trainer.should_stop or self.due(now, epoch_s):
            self._save(trainer)

    def due(self, now: float, epoch_s: float) -> bool:
        """Save now if waiting for the next epoch's end would leave more than every_minutes unsaved."""
        return now + epoch_s - self._last_save > self.every_s

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # EarlyStopping decides after this callback's epoch-end hook: save the epoch it stopped at.
        if trainer.should_stop and self._saved_step != trainer.global_step:
            self._save(trainer)
        self._restore_handler()

    # -- orderly stops ---------------------------------------------------------------------

    def _on_ctrl_c(self, signum, frame) -> None:
        if self._stop_requested:  # a second press: stop now, keep the last saved checkpoint, exit as Ctrl-C does (130)
            raise SystemExit(128 + signal.SIGINT)  # (a KeyboardInterrupt would become Lightning's exit 1)
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

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handler()
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        self._save(trainer)
        if trainer.is_global_zero:
            log.warning("interrupted at epoch %d, step %d: saved %s; resume with ckpt_path=last (or ckpt_path=%s)",
                        trainer.current_epoch, trainer.global_step, self.path, self.path)
