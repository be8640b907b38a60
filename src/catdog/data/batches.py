"""Batches of uint8 images, from the decoded cache or straight from the files.

Both sources yield ``(images, labels)`` with images as (B, S, S, 3) uint8: the DataModule
turns them into augmented, normalised float on the device, so the expensive work happens
once per batch where the model runs, not once per image in Python.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from catdog.data.decode import try_load_rgb

log = logging.getLogger(__name__)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The order of one epoch: a function of (seed, epoch) alone, so a resumed run repeats it."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


class CachedBatches:
    """Batches gathered from a tensor of decoded images that already sits where it is needed.

    ``images`` holds every decoded file; ``rows`` picks this split's images out of it and
    ``labels`` are theirs.

    Used instead of a DataLoader when the whole split is in memory (on the GPU, or in host
    memory for CPU training): gathering a batch is one indexing operation, so worker
    processes would only add copies. Each DDP rank takes every ``world_size``-th sample.
    """

    def __init__(
        self,
        images: torch.Tensor,
        rows: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        done: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        self.images, self.rows, self.labels = images, rows.to(images.device), labels.to(images.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.done = done  # batches of the current epoch already trained (Lightning's own count)
        self._resume: dict | None = None

    def _indices(self) -> np.ndarray:
        order = epoch_order(len(self.labels), self.seed, self.epoch(), self.shuffle)
        if self.world_size > 1:  # equal shares, so no rank waits for another at a collective
            order = order[: len(order) // self.world_size * self.world_size][self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = len(self.labels) // self.world_size if self.world_size > 1 else len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # Stateful, so a run interrupted mid-epoch resumes with the batches it had not trained on yet
    # (Lightning saves this in the checkpoint and restores it before iterating again).
    def state_dict(self) -> dict:
        return {"epoch": self.epoch(), "done": self.done()}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        skip, self._resume = (self._resume or {}), None
        first = skip.get("done", 0) if skip.get("epoch") == self.epoch() else 0
        order = torch.from_numpy(self._indices()).to(self.images.device)
        for start in range(first * self.batch_size, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.images.index_select(0, self.rows[idx]), self.labels[idx]


class FileImages(Dataset):
    """Images decoded from their files on every access: the streaming path, for data sets too big
    to cache. Files were checked once before training; one that changed since is replaced by a
    black image with a warning rather than stopping the run."""

    def __init__(self, paths: list[str], labels: np.ndarray, size: int) -> None:
        self.paths, self.labels, self.size = paths, labels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels, reason = try_load_rgb(self.paths[i], self.size)
        if pixels is None:
            log.warning("%s became unreadable during training (%s): using a black image", self.paths[i], reason)
            pixels = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        return torch.from_numpy(pixels), int(self.labels[i])
