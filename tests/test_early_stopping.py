"""callbacks/early_stopping=val_loss: off by default, and when chosen it stops a run early."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import EarlyStopping

from helpers import TINY, compose_train
from train import build_callbacks, train


def test_early_stopping_is_off_by_default(tmp_path):
    cfg = compose_train(tmp_path, [])
    assert "early_stopping" not in cfg.callbacks
    assert not any(isinstance(c, EarlyStopping) for c in build_callbacks(cfg))


def test_early_stopping_stops_a_run_before_max_epochs(tmp_path, synthetic_root):
    # No val/loss improves by 100: the first epoch sets the best, the second runs out of patience.
    cfg = compose_train(tmp_path, [f"data.root={synthetic_root}", *TINY, "trainer.max_epochs=4", "test=false",
                                   "callbacks.gradcam=null", "callbacks/early_stopping=val_loss",
                                   "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=100"])
    stopper = next(c for c in build_callbacks(cfg) if isinstance(c, EarlyStopping))
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val/loss", "min", 1)
    train(cfg)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    # Saved where it stopped (EarlyStopping decides after LastCheckpoint's epoch-end save): two epochs done, of four.
    assert last["epoch"] == 2
