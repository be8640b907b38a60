"""The job shared by eval.py, predict.py and cam.py: load a checkpoint, decode and check a
list of image files once, and run them through the network in batches on the right device.

- The checkpoint is read with ``torch.load(weights_only=True)`` semantics (see
  ``catdog.model.checkpoint``); a bare ``state_dict`` of the original script loads too.
- Files are decoded at the checkpoint's image size: directly for a few files, through the
  decoded-image cache (``catdog.data.cache``) for more. A file that does not decode is
  reported (``bad_files.csv`` plus one warning line), never fatal.
- Images are normalised as in training (ImageNet mean and std, unless the checkpoint stores
  others); the network runs in fp32 on a CPU, under bf16 autocast on a GPU.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from catdog.data.augment import IMAGENET_MEAN, IMAGENET_STD, DeviceAugment
from catdog.data.cache import Decoded, decode_all
from catdog.data.decode import MAX_PIXELS, try_load_rgb
from catdog.data.files import FileList
from catdog.errors import UserError
from catdog.model.checkpoint import load_checkpoint, net_from_checkpoint, resolve_ckpt_path
from catdog.model import evaluation
from catdog.model.simple_cnn import SimpleCNN

log = logging.getLogger(__name__)

DIRECT_DECODE_MAX = 64  # up to this many files are decoded in-process, without writing a cache


# --- the model ------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A checkpoint's network, on the CPU, with what inference needs to know about it."""

    net: SimpleCNN
    classes: list[str]
    image_size: int
    path: str
    tta_flip: bool = False  # what the training run's model was configured with, if stored
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def class_index(self, name: str) -> int:
        if name not in self.classes:
            raise UserError(f"the checkpoint's classes are {', '.join(self.classes)}: it has no class {name!r}")
        return self.classes.index(name)


def _stored(ckpt: dict, *keys: str):
    """``ckpt[k1][k2]...`` where every level is a dict, else None."""
    node = ckpt
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def load_model(ckpt_path: str | None, output_root: str | os.PathLike = "outputs", image_size: int | None = None) -> LoadedModel:
    """The network of ``ckpt_path`` (a file, or ``last``: the newest training run's last.ckpt
    under ``output_root``, see catdog.model.resume).

    ``image_size``, when given, must be the one the network was trained at (a clear UserError
    otherwise); by default it is read from the checkpoint.
    """
    path = resolve_ckpt_path(ckpt_path, output_root)
    if path is None:
        raise UserError("ckpt_path is not set: add ckpt_path=/path/to/file.ckpt (or ckpt_path=last: the newest "
                        f"training run's checkpoints/last.ckpt under {output_root}/)")
    ckpt = load_checkpoint(path)
    net, classes = net_from_checkpoint(ckpt, expect_image_size=image_size)
    size = int(image_size or net.image_size)
    stats = _stored(ckpt, "CatDogDataModule") or {}
    mean, std = stats.get("mean") or IMAGENET_MEAN, stats.get("std") or IMAGENET_STD
    return LoadedModel(net, classes, size, path, tta_flip=bool(_stored(ckpt, "catdog", "config", "model", "tta_flip") or False),
                       mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


def select_device(name: str | None = "auto") -> torch.device:
    """``auto``: CUDA when there is a GPU, else the CPU; or any name torch.device accepts."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a device name: use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name}: no CUDA GPU is available here; use device=auto or device=cpu")
    return device


# --- decoding ------------------------------------------------------------------------------


def _decode_directly(files: FileList, size: int, max_pixels: int) -> Decoded:
    good, pixels, bad = [], [], []
    for i, path in enumerate(files.paths):
        image, reason = try_load_rgb(path, size, max_pixels)
        if image is None:
            bad.append((path, reason))
        else:
            pixels.append(image)
            good.append(i)
    images = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    return Decoded(paths=[files.paths[i] for i in good], labels=np.asarray(files.labels, dtype=np.int64)[good],
                   classes=files.classes, images=images, rows=np.arange(len(good)), bad=sorted(bad))


def decode_files(
    files: FileList,
    size: int,
    cache_dir: str | os.PathLike | None,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
    direct_max: int = DIRECT_DECODE_MAX,
) -> Decoded:
    """Every file of ``files`` checked and decoded at ``size`` px, once.

    A few files (``direct_max`` or fewer, or any number without a ``cache_dir``) are decoded
    here; more go through the decoded-image cache, in parallel, and are reused next time.
    """
    if cache_dir is None or len(files.paths) <= direct_max:
        return _decode_directly(files, size, max_pixels)
    workers = min(os.cpu_count() or 1, 16) if workers is None else max(1, workers)
    return decode_all(files, size, cache_dir, with_pixels=True, workers=workers, max_pixels=max_pixels)


def uint8_batches(decoded: Decoded, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, uint8 (B, S, S, 3) CPU tensor) over the good images of ``decoded``, in order."""
    if batch_size < 1:
        raise UserError(f"data.batch_size={batch_size} must be at least 1")
    for start in range(0, len(decoded.paths), batch_size):
        rows = decoded.rows[start : start + batch_size]
        yield start, torch.from_numpy(np.ascontiguousarray(decoded.images[rows]))


def to_model_input(images: torch.Tensor, model: LoadedModel, device: torch.device) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> normalised float32 (B, 3, S, S) on ``device``, as validation sees it."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2)
    return _normaliser(model.mean, model.std)(x, train=False)


@functools.lru_cache(maxsize=8)
def _normaliser(mean: tuple[float, ...], std: tuple[float, ...]) -> DeviceAugment:
    return DeviceAugment(hflip=0.0, degrees=0.0, brightness=0.0, contrast=0.0, saturation=0.0, mean=mean, std=std)


# --- running the network -------------------------------------------------------------------


@torch.inference_mode()
def class_log_probs(net: torch.nn.Module, x: torch.Tensor, tta_flip: bool = False) -> torch.Tensor:
    """float32 (B, classes) log-probabilities, as in validation (``catdog.model.evaluation``);
    bf16 autocast on a GPU, fp32 on a CPU, for determinism."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        return evaluation.log_probs(net, x, tta_flip).float()


@dataclass
class Predictions:
    """The good files, their labels (-1 when unlabelled), class log-probabilities, and the bad files."""

    paths: list[str]
    labels: np.ndarray
    log_probs: np.ndarray  # float64 (N, classes), the checkpoint's class order
    classes: list[str]  # the checkpoint's classes
    bad: list[tuple[str, str]] = field(default_factory=list)

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs)


def predict_decoded(model: LoadedModel, decoded: Decoded, device: torch.device, batch_size: int = 64,
                    tta_flip: bool = False) -> np.ndarray:
    """float64 (N, classes) log-probabilities of the good images of ``decoded``."""
    net = model.net.to(device).eval()
    out = [class_log_probs(net, to_model_input(batch, model, device), tta_flip).cpu()
           for _, batch in uint8_batches(decoded, batch_size)]
    return torch.cat(out).double().numpy() if out else np.zeros((0, len(model.classes)))


def predict_files(
    model: LoadedModel,
    files: FileList,
    device: torch.device,
    batch_size: int = 64,
    tta_flip: bool = False,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
    direct_max: int = DIRECT_DECODE_MAX,
) -> Predictions:
    """Decode and check ``files`` once, then P(class) for each good one; bad files are listed."""
    decoded = decode_files(files, model.image_size, cache_dir, workers, max_pixels, direct_max)
    log_probs = predict_decoded(model, decoded, device, batch_size, tta_flip)
    return Predictions(decoded.paths, decoded.labels, log_probs, list(model.classes), list(decoded.bad))


# --- reporting -------------------------------------------------------------------------------


def require_some(n_good: int, n_bad: int, where: str) -> None:
    if n_good == 0:
        raise UserError(f"none of the {n_bad} images in {where} could be read: see bad_files.csv in the run folder")


# --- metrics -------------------------------------------------------------------------------


def classification_metrics(log_probs: np.ndarray, targets: np.ndarray, num_classes: int) -> dict:
    """The test metrics training logs (accuracy, macro F1, AUROC), the log loss and the confusion
    matrix (rows: true class, columns: predicted), named as training names them."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    log_p = torch.as_tensor(log_probs, dtype=torch.float64)
    probs = log_p.exp().float()
    y = torch.as_tensor(targets, dtype=torch.long)
    return {
        **{k: float(v) for k, v in evaluation.metric_collection(num_classes, "test/")(probs, y).items()},
        "test/loss": float(torch.nn.functional.nll_loss(log_p, y)),  # the log loss, Kaggle's score
        "confusion_matrix": MulticlassConfusionMatrix(num_classes)(probs, y).tolist(),
    }
