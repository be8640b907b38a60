"""Where the output is not a terminal (a SLURM log, nohup), the progress bar gives way to one log
line per epoch, with that epoch's own metrics."""

from __future__ import annotations

import logging
import sys

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from catdog.callbacks.progress_bar import ProgressBar


class LogsAsTheClassifier(BoringModel):
    """Logs its training metric in on_train_epoch_end, after the callbacks' hook, as the Classifier
    does, and a validation metric: each names the epoch it was logged in."""

    def on_train_epoch_end(self) -> None:
        self.log("train/epoch_mark", float(self.current_epoch), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self.log("val/epoch_mark", float(self.current_epoch), prog_bar=True)
        return super().validation_step(batch, batch_idx)


def fit(tmp_path, bar: ProgressBar, val_every: int = 2) -> None:
    trainer = L.Trainer(max_epochs=4, check_val_every_n_epoch=val_every, limit_train_batches=2, limit_val_batches=1,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[bar], default_root_dir=tmp_path)
    trainer.fit(LogsAsTheClassifier())


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "catdog.progress"]


@pytest.mark.parametrize("val_every", [1, 2])
def test_piped_output_gets_one_line_per_epoch_with_that_epochs_metrics(tmp_path, monkeypatch, caplog, val_every):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    bar = ProgressBar()
    with caplog.at_level(logging.INFO, logger="catdog.progress"):
        fit(tmp_path, bar, val_every)
    assert bar.is_disabled
    got = lines(caplog)
    assert [line.split(" (")[0] for line in got] == ["Epoch 0/3", "Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    for epoch, line in enumerate(got):
        assert f"train/epoch_mark {float(epoch):.4g}" in line, line  # this epoch's, not the one before
        validated = (epoch + 1) % val_every == 0
        assert (f"val/epoch_mark {float(epoch):.4g}" in line) == validated, line
        assert ("val/" in line) == validated, line  # an unvalidated epoch never repeats the last validation
        if validated:  # training's metrics first, though validation logged its own first (epoch 0, val_every 1)
            assert line.index("train/epoch_mark") < line.index("val/epoch_mark"), line


@pytest.mark.parametrize(("terminal", "lines_when_piped"), [(True, True), (False, False)])
def test_a_terminal_or_lines_switched_off_keeps_the_bar(tmp_path, monkeypatch, caplog, terminal, lines_when_piped):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)
    bar = ProgressBar(lines_when_piped=lines_when_piped)
    with caplog.at_level(logging.INFO, logger="catdog.progress"):
        fit(tmp_path, bar)
    assert bar.is_enabled and lines(caplog) == []
