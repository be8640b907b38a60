"""How Lightning writes and reads this project's checkpoints."""

from __future__ import annotations

import errno
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from catdog.atomic_write import write_atomic
from catdog.errors import DiskFullError
from catdog.model.checkpoint_load import load_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Each checkpoint is written atomically (``catdog.atomic_write``): a crash while saving
    leaves the previous checkpoint whole, never a truncated one. A full disk ends the run with a
    DiskFullError naming the checkpoint that failed. Loading refuses pickled code."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(path, lambda f: torch.save(checkpoint, f))  # the partial file is removed on failure
        except (OSError, RuntimeError) as err:
            if not _disk_full(err):
                raise
            raise DiskFullError(_disk_full_message(path, checkpoint)) from None

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path)


def _disk_full(err: BaseException | None) -> bool:
    """ENOSPC or EDQUOT, also where torch.save turned it into a RuntimeError of its zip writer."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _disk_full_message(path: Path, checkpoint: dict) -> str:
    last = path.with_name("last.ckpt")
    then = f"resume with ckpt_path={last}" if last.exists() else "start again (no last.ckpt was saved yet)"
    return (f"the disk is full: saving {path} (epoch {checkpoint.get('epoch', '?')}, step {checkpoint.get('global_step', '?')}) "
            f"failed and training stopped; every checkpoint saved before is kept whole. Free some space, then {then}")
