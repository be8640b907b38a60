"""The LightningDataModule: find and check the images, split them, serve uint8 batches, and
turn each batch into augmented, normalised float on the device the model runs on."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from catdog.data.augment import IMAGENET_MEAN, IMAGENET_STD, DeviceAugment
from catdog.data.batches import CachedBatches, FileImages, epoch_order
from catdog.data.cache import Decoded, decode_all
from catdog.data.decode import MAX_PIXELS
from catdog.data.files import find_labelled
from catdog.data.report import report_skipped
from catdog.errors import UserError

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


def read_boxes(root: str | os.PathLike) -> dict[str, tuple[float, ...]]:
    """Object boxes from ``boxes.csv`` beside the images, as fractions of width and height."""
    path = Path(root) / "boxes.csv"
    if not path.is_file():
        return {}
    boxes = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            w, h = float(row["width"]), float(row["height"])
            boxes[row["file"]] = (float(row["x0"]) / w, float(row["y0"]) / h, float(row["x1"]) / w, float(row["y1"]) / h)
    return boxes


class CatDogDataModule(L.LightningDataModule):
    """Labelled cat/dog images from ``root`` (Kaggle's flat layout or class sub-folders)."""

    def __init__(
        self,
        root: str | None = None,
        image_size: int = 224,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        split_seed: int = 42,
        seed: int = 42,
        cache: str = "auto",
        cache_dir: str = "outputs/cache",
        num_workers: int | None = None,
        max_pixels: int = MAX_PIXELS,
        augment: dict | None = None,
        compile_augment: bool = False,
        cam_samples: int = 8,
        report_dir: str | None = None,
    ) -> None:
        super().__init__()
        if cache not in CACHE_MODES:
            raise UserError(f"data.cache={cache!r} is not one of {CACHE_MODES}")
        self.root, self.image_size, self.batch_size = root, image_size, batch_size
        self.val_fraction, self.test_fraction, self.split_seed, self.seed = val_fraction, test_fraction, split_seed, seed
        self.cache, self.cache_dir, self.max_pixels = cache, cache_dir, max_pixels
        # The CPUs this process may use (a SLURM job's share, not the whole node's), at most 16.
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.num_workers = min(cpus, 16) if num_workers is None else num_workers
        self.augment = DeviceAugment(**(augment or {}))
        self.compile_augment = compile_augment
        self._train_augment = None  # made on first use: a compiled function does not pickle (ddp_spawn)
        self.cam_samples, self.report_dir = cam_samples, report_dir
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
        self.splits = {"train": train, "val": val, "test": test}
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
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.completed if self.trainer is not None else 0

    def _loader(self, split: str, train: bool):
        idx = self.splits[split]
        if not train:  # one fixed shuffle: files come sorted by class, and every batch should hold both
            idx = idx[epoch_order(len(idx), self.split_seed, 0, shuffle=True)]
        labels = torch.from_numpy(self.decoded.labels[idx])
        # Drop a ragged last training batch (a batch of one breaks BatchNorm), unless it is the only one.
        drop_last = train and len(idx) >= self.batch_size
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if self._images is not None:
            rows = torch.from_numpy(self.decoded.rows[idx])
            return CachedBatches(self._images, rows, labels, self.batch_size, shuffle=train, seed=self.seed,
                                 epoch=self._epoch, done=self._batches_done, rank=rank, world_size=world,
                                 drop_last=drop_last)
        dataset = FileImages([self.decoded.paths[i] for i in idx], labels.numpy(), self.image_size)
        sampler = _EpochSampler(len(dataset), self.seed, self._epoch) if train else None
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
        """uint8 (B, S, S, 3) on the device -> augmented (in training), normalised float NCHW."""
        images, labels = batch
        images = images.permute(0, 3, 1, 2)  # a channels-last view: no copy
        trainer = self.trainer
        train = trainer is not None and trainer.training
        if train:
            # Everything random in a training step (augmentation, dropout, MixUp) draws from a seed
            # made of (seed, epoch, step), not from a running state: a run resumed from any
            # checkpoint, even one saved mid-epoch, then repeats the uninterrupted run exactly.
            step = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # this batch's index in the epoch
            # Under DDP each rank draws its own augmentations and dropout masks (one process: unchanged).
            key = [self.seed, trainer.current_epoch, step] + ([trainer.global_rank] if trainer.world_size > 1 else [])
            _seed_step(int(np.random.SeedSequence(key).generate_state(1)[0]), images.device)
            return self._augment_training(images), labels
        return self.augment(images, train=False), labels

    def _augment_training(self, images: torch.Tensor) -> torch.Tensor:
        if self._train_augment is None:
            # Compiled, ~100 small operations per batch become a few fused kernels: on a GPU their
            # launches would otherwise take longer than the training step itself. Every batch has
            # the same shape (the ragged last one is dropped), so it compiles once.
            fn = self.augment.train_batch
            self._train_augment = torch.compile(fn, dynamic=False) if self.compile_augment else fn
        return self._train_augment(images)

    # -- for the callbacks -----------------------------------------------------------------

    def sample_images(self, n: int | None = None, split: str = "val") -> dict:
        """A fixed, class-balanced set of ``n`` images of ``split``: uint8 (n, 3, S, S), labels,
        paths, and object boxes (fractions of the image) where the data set has them."""
        n = n or self.cam_samples
        idx = self.splits[split]
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

    def state_dict(self) -> dict:
        return {"classes": self.classes, "image_size": self.image_size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


class _EpochSampler(torch.utils.data.Sampler):
    """Shuffles by (seed, epoch) instead of a running random state, so a resumed run repeats it."""

    def __init__(self, n: int, seed: int, epoch) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(epoch_order(self.n, self.seed, self.epoch(), shuffle=True).tolist())


def _seed_step(seed: int, device: torch.device) -> None:
    """Seed the CPU's generator and this device's, not every device's as ``torch.manual_seed``
    does: that also queues seeds for CUDA, XPU and MTIA, capturing a Python stack trace for each
    (about 2 ms a step on a small CPU, where the training step itself can take 10 ms)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()].manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)


def _copy_in_chunks(images: np.ndarray, device: torch.device | None, chunk: int = 256 << 20) -> torch.Tensor:
    """Copy a memory-mapped array into one tensor a slice at a time, so the host never holds two copies."""
    out = torch.empty(images.shape, dtype=torch.uint8, device=device)
    rows = max(1, chunk // max(1, images[0].nbytes))
    for start in range(0, len(images), rows):
        out[start : start + rows].copy_(torch.from_numpy(np.ascontiguousarray(images[start : start + rows])))
    return out
