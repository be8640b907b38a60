"""Checks made before any work starts, so a run cannot fail hours in for want of a folder.

``OutputCheck`` is a Hydra callback: it runs before Hydra creates the run (or sweep) folder,
which would otherwise fail with a traceback on a read-only or full disk. ``check_space`` is
called by train.py once it knows the sizes of the checkpoints and the decoded-image cache;
``check_last_epoch_validated`` and ``check_accelerator`` before anything is trained.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import uuid
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from catdog.errors import UserError

_PROBE_BYTES = 1 << 20


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Create ``folder`` and write (and flush to disk) a small probe file in it."""
    folder = Path(folder)
    probe = folder / f".catdog-probe-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * _PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        reason = "the disk is full" if full else (err.strerror or str(err))
        fix = "free some space or point {} elsewhere" if full else "point {} at a folder you can write to"
        raise UserError(f"cannot write to {what} {folder} ({reason}): {fix.format(what)}") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:  # the folder itself could not be made: nothing to remove
            pass


def check_space(folder: str | os.PathLike, need_bytes: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise UserError(
            f"{what} {folder} has {free / 2**30:.2f} GiB free but this run needs about {need_bytes / 2**30:.2f} GiB "
            f"(checkpoints and decoded images): free some space or point {what} elsewhere"
        )


def check_accelerator(accelerator: str | None) -> None:
    """trainer=gpu on a machine without one: one line, not Lightning's error wrapped by Hydra's instantiate."""
    import torch

    if str(accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.accelerator={accelerator} but no CUDA GPU is visible here: "
                        "use trainer=cpu, or trainer=default (which takes a GPU where there is one)")


def check_last_epoch_validated(max_epochs: int | None, every: int | None) -> None:
    """Validation every ``every`` epochs must fall on the last one: the final metrics, the best
    checkpoint and a sweep's objective come from it (Lightning would silently skip it)."""
    if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(max_epochs, int)):
        raise UserError(f"trainer.max_epochs={max_epochs} is not a whole number of epochs: give one, e.g. trainer.max_epochs=40")
    if every and every > 1 and max_epochs and max_epochs > 0 and max_epochs % every:
        raise UserError(f"trainer.max_epochs={max_epochs} is not a multiple of trainer.check_val_every_n_epoch={every}, "
                        f"so the last epoch would not be validated: use a multiple of {every}, "
                        "or add trainer.check_val_every_n_epoch=1")


class OutputCheck(Callback):
    """Fail with one line, before Hydra makes its folders, when the output root is not writable."""

    def _check(self, config: DictConfig) -> None:
        root = Path(str(config.paths.output_root))
        try:
            check_writable(root, "paths.output_root")
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config)
        # Made now, not with the first job: a sweeper may keep its state there (Optuna's study).
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
