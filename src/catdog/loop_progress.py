"""The one place that reads Lightning's loop internals: how many training batches of the current
epoch are done. The cached batches save it in checkpoints so a run stopped mid-epoch resumes with
the batches it had not trained on (Lightning passes no such count to a data source).
``tests/test_loop_progress.py`` fails loudly if a Lightning release moves it."""

from __future__ import annotations

import lightning as L


def batches_done_this_epoch(trainer: L.Trainer) -> int:
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed
