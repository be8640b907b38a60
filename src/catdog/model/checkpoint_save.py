"""How Lightning writes and reads this project's checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from catdog.atomic_write import write_atomic
from catdog.model.checkpoint_load import load_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Each checkpoint is written atomically (``catdog.atomic_write``): a crash while saving
    leaves the previous checkpoint whole, never a truncated one. Loading refuses pickled code."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path)
