"""The LightningDataModule: find and check the images, split them, and serve uint8 batches
(N, 3, S, S) on the device the model runs on. Augmenting them is the training step's job
(``catdog.model.classifier``), normalising them the network's (``catdog.model.image_input``)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from catdog.data.batches import CachedBatches, FileImages, epoch_order
from catdog.data.boxes import read_boxes
from catdog.data.cache import Decoded, decode_all
from catdog.data.decode import MAX_PIXELS
from catdog.data.files import find_labelled, labelled_subfolder
from catdog.data.report import report_skipped
from catdog.data.workers import default_workers
from catdog.errors import UserError
from catdog.loop_progress import batches_done_this_epoch

log = logging.getLogger(__name__)
CACHE_MODES = ("auto", "device", "host", "off")


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int):
    """(train, val, test) index arrays with each class in the same proportions in each part.

    A function of the labels and the seed only (numpy's PCG64 is the same on every machine),
    so the same data and seed give the same split anywhere.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in [0, 1) and sum below 1")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = round(len(idx) * val_fraction), round(len(idx) * test_fraction)
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val : n_val + n_test])
        parts[0].append(idx[n_val + n_test :])
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def stratified_subset(labels: np.ndarray, idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of the indices ``idx``, each class in its share, fixed by ``seed``.

    Each class's picks are a prefix of one seeded order, so a smaller subset lies inside every
    larger one: the points of a learning curve differ only by the photos added.
    """
    if not 2 <= n <= len(idx):
        raise UserError(f"data.train_limit={n} must be between 2 and the {len(idx)} images of the training split")
    rng = np.random.default_rng([seed, 1])  # a stream of its own, not the split's
    classes, counts = np.unique(labels[idx], return_counts=True)
    quotas = np.floor(n * counts / len(idx)).astype(int)
    quotas[np.argsort(-(n * counts / len(idx) - quotas))[: n - quotas.sum()]] += 1  # largest remainders
    picked = [rng.permutation(idx[labels[idx] == c])[:q] for c, q in zip(classes, quotas)]
    return np.sort(np.concatenate(picked))


class CatDogDataModule(L.LightningDataModule):
    """Labelled cat/dog images from ``root`` (Kaggle's flat layout or class sub-folders)."""

    def __init__(
        self,
        root: str | None = None,
        classes: tuple[str, ...] = ("cat", "dog"),
        image_size: int = 224,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        train_limit: int | None = None,
        split_seed: int = 42,
        seed: int = 42,
        cache: str = "auto",
        cache_dir: str = "outputs/cache",
        num_workers: int | None = None,
        max_pixels: int = MAX_PIXELS,
        report_dir: str | None = None,
    ) -> None:
        super().__init__()
        if cache not in CACHE_MODES:
            raise UserError(f"data.cache={cache!r} is not one of {CACHE_MODES}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"data.batch_size={batch_size} must be a whole number of images, at least 1")
        self.root, self.image_size, self.batch_size = root, image_size, batch_size
        self.expected_classes = [str(c) for c in classes]
        self.val_fraction, self.test_fraction, self.split_seed, self.seed = val_fraction, test_fraction, split_seed, seed
        self.train_limit = train_limit
        self.cache, self.cache_dir, self.max_pixels = cache, cache_dir, max_pixels
        self.num_workers = default_workers(num_workers)
        self.report_dir = report_dir
        self.decoded: Decoded | None = None
        self.splits: dict[str, np.ndarray] = {}
        self._images: torch.Tensor | None = None
        self._ignored: list[tuple[str, str]] = []

    # -- preparing -------------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return self.decoded.classes if self.decoded else []

    def _decode(self, build: bool) -> Decoded:
        files = find_labelled(self.root)
        if files.classes != self.expected_classes:
            if files.layout == "class-folders" and (meant := labelled_subfolder(self.root, self.expected_classes)):
                raise UserError(f"{self.root} holds the folders {files.classes}, not the classes {self.expected_classes}, "
                                f"and {meant.name}/ looks like the labelled photos: did you mean data.root={meant}?")
            raise UserError(f"{self.root} holds the classes {files.classes}, not data.classes={self.expected_classes}: "
                            f"add data.classes=[{','.join(files.classes)}] to train on them")
        self._ignored = files.ignored
        return decode_all(files, self.image_size, self.cache_dir, with_pixels=self.cache != "off",
                          workers=self.num_workers or 1, max_pixels=self.max_pixels, build=build)

    def prepare_data(self) -> None:
        """Runs once per node: scan the files and build the decoded cache."""
        self._decode(build=True)

    def setup(self, stage: str | None = None) -> None:
        if self.decoded is not None:
            return
        trainer = self.trainer
        self.decoded = self._decode(build=trainer is None or trainer.local_rank == 0)
        if len(self.decoded.paths) == 0:
            raise UserError(f"none of the images in {self.root} could be read: see the report of bad files")
        if len(set(self.decoded.labels.tolist())) < 2:
            raise UserError(f"only one class left in {self.root} after skipping unreadable files")
        train, val, test = stratified_split(self.decoded.labels, self.val_fraction, self.test_fraction, self.split_seed)
        if self.train_limit is not None:
            train = stratified_subset(self.decoded.labels, train, self.train_limit, self.split_seed)
        self.splits = {"train": train, "val": val, "test": test}
        if len(val) == 0 and self.val_fraction == 0:
            raise UserError("data.val_fraction=0 leaves no validation images, which pick the best checkpoint and draw "
                            "the maps: give a share of the images, e.g. data.val_fraction=0.2")
        if len(train) == 0 or len(val) == 0:
            raise UserError(f"{len(self.decoded.paths)} images are too few to split into training and validation sets")
        self._report_bad()
        self._images = self._place_images()

    def _report_bad(self) -> None:
        if self.trainer is None or self.trainer.is_global_zero:
            report_skipped(self.decoded.bad, len(self.decoded.bad) + len(self.decoded.paths), self.report_dir, self._ignored)

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _place_images(self) -> torch.Tensor | None:
        """Put the decoded pixels where batches are gathered: GPU memory when they fit, else host."""
        images = self.decoded.images
        if images is None:
            return None
        device = self._device()
        if device.type != "cuda":
            return torch.from_numpy(images)  # memory-mapped: the OS pages it in as needed
        free, _ = torch.cuda.mem_get_info(device)
        fits = images.nbytes < 0.5 * free  # leave room for activations, cudnn workspaces, compile
        if self.cache == "device" or (self.cache == "auto" and fits):
            return _copy_in_chunks(images, device)
        return _copy_in_chunks(images, None).pin_memory()

    # -- serving ---------------------------------------------------------------------------

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _batches_done(self) -> int:
        return batches_done_this_epoch(self.trainer) if self.trainer is not None else 0

    def _loader(self, split: str, train: bool):
        idx = self.splits[split]
        if not train:  # one fixed shuffle: files come sorted by class, and every batch should hold both
            idx = idx[epoch_order(len(idx), self.split_seed, 0, shuffle=True)]
        labels = torch.from_numpy(self.decoded.labels[idx])
        # Drop a ragged last training batch (a batch of one breaks BatchNorm), unless it is the only one.
        drop_last = train and len(idx) >= self.batch_size
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        # overfit_batches: the same first batches every epoch, as Lightning makes a DataLoader's sampler.
        shuffle = train and not (trainer is not None and trainer.overfit_batches)
        if self._images is not None:
            rows = torch.from_numpy(self.decoded.rows[idx])
            return CachedBatches(self._images, rows, labels, self.batch_size, shuffle=shuffle, seed=self.seed,
                                 epoch=self._epoch, done=self._batches_done, rank=rank, world_size=world,
                                 drop_last=drop_last)
        dataset = FileImages([self.decoded.paths[i] for i in idx], labels.numpy(), self.image_size)
        sampler = _EpochSampler(len(dataset), self.seed, self._epoch) if shuffle else None
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self._device().type == "cuda")

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        if len(self.splits["test"]) == 0:
            raise UserError("there is no test split: set data.test_fraction above 0 (e.g. 0.1)")
        return self._loader("test", train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 (B, S, S, 3) -> (B, 3, S, S), the networks' layout: a channels-last view, no copy."""
        images, labels = batch
        return images.permute(0, 3, 1, 2), labels

    # -- for the callbacks -----------------------------------------------------------------

    def sample_images(self, n: int) -> dict:
        """A fixed, class-balanced set of ``n`` validation images: uint8 (n, 3, S, S), labels,
        paths, and object boxes (fractions of the image) where the data set has them."""
        idx = self.splits["val"]
        labels = self.decoded.labels[idx]
        order = epoch_order(len(idx), self.split_seed, 0, shuffle=True)  # fixed: same images every epoch
        classes = np.unique(labels)
        per_class = [order[labels[order] == c] for c in classes]
        chosen = [int(p[k]) for k in range(-(-n // len(classes))) for p in per_class if k < len(p)][:n]
        picked = idx[chosen]
        paths = [self.decoded.paths[i] for i in picked]
        images = self.load_uint8(picked)
        boxes = read_boxes(self.root) if self.root else {}
        return {
            "images": images,
            "labels": torch.from_numpy(self.decoded.labels[picked]),
            "paths": paths,
            "boxes": torch.tensor([boxes[Path(p).name] for p in paths]) if boxes and all(Path(p).name in boxes for p in paths) else None,
        }

    def load_uint8(self, indices: np.ndarray) -> torch.Tensor:
        """Decoded images by index into ``decoded.paths``, as uint8 (n, 3, S, S) on the CPU."""
        if self.decoded.images is not None:
            pixels = self.decoded.images[self.decoded.rows[indices]]
        else:
            pixels = np.stack([FileImages(self.decoded.paths, self.decoded.labels, self.image_size)[i][0].numpy() for i in indices])
        return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).contiguous()


class _EpochSampler(torch.utils.data.Sampler):
    """Shuffles by (seed, epoch) instead of a running random state, so a resumed run repeats it."""

    def __init__(self, n: int, seed: int, epoch) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(epoch_order(self.n, self.seed, self.epoch(), shuffle=True).tolist())


def _copy_in_chunks(images: np.ndarray, device: torch.device | None, chunk: int = 256 << 20) -> torch.Tensor:
    """Copy a memory-mapped array into one tensor a slice at a time, so the host never holds two copies."""
    out = torch.empty(images.shape, dtype=torch.uint8, device=device)
    rows = max(1, chunk // max(1, images[0].nbytes))
    for start in range(0, len(images), rows):
        out[start : start + rows].copy_(torch.from_numpy(np.ascontiguousarray(images[start : start + rows])))
    return out
