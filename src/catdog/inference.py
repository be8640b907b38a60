"""Running a network outside training: load a checkpoint's network, decode image files once,
and run uint8 images through the network in batches on a device, with Grad-CAM maps of a
layer on request. eval.py, predict.py, cam.py and the Grad-CAM callback all go through
``run_network``.

- The checkpoint is read with ``torch.load(weights_only=True)`` semantics
  (``catdog.model.checkpoint_load``); a bare ``state_dict`` of the original script loads too.
- Files are decoded at the network's image size: directly for a few files, through the
  decoded-image cache (``catdog.data.cache``) for more. A file that does not decode is
  reported by the caller (``bad_files.csv``), never fatal.
- The network takes the uint8 pixels and normalises them itself; it runs under bf16 autocast on
  a GPU, and on a CPU in fp32 (the commands: the same figures on every CPU) or in the caller's
  autocast (the Grad-CAM callback: the trainer's precision); the maps' arithmetic is fp32.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from catdog.data.cache import Decoded, decode_all
from catdog.data.decode import MAX_PIXELS, try_load_rgb
from catdog.data.files import FileList
from catdog.data.workers import default_workers
from catdog.errors import UserError
from catdog.gradcam.maps import Targets, evaluating, grad_cam_with_logits
from catdog.model import evaluation
from catdog.model.calibration import scaled
from catdog.model.checkpoint_load import load_checkpoint, net_from_checkpoint, resolve_ckpt_path, stored_temperature
from catdog.model.image_input import to_channels_last

DIRECT_DECODE_MAX = 64  # up to this many files are decoded in-process, without writing a cache


# --- the model ------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A checkpoint's network, on the CPU, in eval mode, channels-last as its training ran (model.channels_last),
    with where it came from."""

    net: torch.nn.Module
    path: str
    tta_flip: bool = False  # what the training run's model was configured with, if stored
    eval_zoom: float = 1.0  # the same
    temperature: float = 1.0  # fitted on validation (model.calibrate), else 1

    @property
    def classes(self) -> list[str]:
        return self.net.classes

    @property
    def image_size(self) -> int:
        return self.net.image_size

    def scoring(self, tta_flip: bool | None = None, eval_zoom: float | None = None) -> dict:
        """``log_probs_of``'s view settings: those given (a command's overrides), else the stored ones;
        and the checkpoint's temperature."""
        zoom = evaluation.checked_zoom(self.eval_zoom if eval_zoom is None else eval_zoom)
        if tta_flip is not None and not isinstance(tta_flip, bool):  # `tta_flip=no` is a word, and words are true
            raise UserError(f"tta_flip={tta_flip}: give true, false, or null (as the checkpoint's model was configured)")
        return {"tta_flip": self.tta_flip if tta_flip is None else tta_flip, "eval_zoom": zoom, "temperature": self.temperature}


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
    net = net_from_checkpoint(ckpt, expect_image_size=image_size)
    model_cfg = ((ckpt.get("catdog") or {}).get("config") or {}).get("model") or {}
    if model_cfg.get("channels_last", True):  # as training ran it (a bare state_dict: the default's)
        to_channels_last(net)
    return LoadedModel(net, path, tta_flip=bool(model_cfg.get("tta_flip", False)),
                       eval_zoom=float(model_cfg.get("eval_zoom", 1.0)),
                       temperature=stored_temperature(ckpt))


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


def decode_files(files: FileList, size: int, cache_dir: str | os.PathLike | None, workers: int | None = None,
                 max_pixels: int = MAX_PIXELS) -> Decoded:
    """Every file of ``files`` checked and decoded at ``size`` px, once.

    A few files (``DIRECT_DECODE_MAX`` or fewer, or any number without a ``cache_dir``) are
    decoded here; more go through the decoded-image cache, in parallel, and are reused next time.
    """
    if cache_dir is None or len(files.paths) <= DIRECT_DECODE_MAX:
        return _decode_directly(files, size, max_pixels)
    return decode_all(files, size, cache_dir, with_pixels=True, workers=default_workers(workers) or 1, max_pixels=max_pixels)


def decoded_batches(decoded: Decoded, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, S, S) CPU tensors of the good images of ``decoded``, in order."""
    if batch_size < 1:
        raise UserError(f"data.batch_size={batch_size} must be at least 1")
    for start in range(0, len(decoded.paths), batch_size):
        rows = decoded.rows[start : start + batch_size]
        yield torch.from_numpy(np.ascontiguousarray(decoded.images[rows])).permute(0, 3, 1, 2)


def require_some(n_good: int, n_bad: int, where: str) -> None:
    if n_good == 0:
        raise UserError(f"none of the {n_bad} images in {where} could be read: see bad_files.csv in the run folder")


# --- running the network -------------------------------------------------------------------


@dataclass
class Outputs:
    """One batch's results: its first image's index, its images as given, float32 (B, classes)
    log-probabilities on the CPU, and with a map layer float32 (B, S, S) maps in [0, 1] on the CPU."""

    start: int
    images: torch.Tensor
    log_probs: torch.Tensor
    cams: torch.Tensor | None = None


@contextlib.contextmanager
def eager(net: torch.nn.Module):
    """Run a module compiled in place (``net.compile()``) eagerly for a moment: forward hooks
    on its layers, which Grad-CAM needs, are not seen inside a compiled graph, and compiling
    evaluation too would cost more compilations than these few images are worth."""
    compiled = getattr(net, "_compiled_call_impl", None)
    net._compiled_call_impl = None
    try:
        yield net
    finally:
        net._compiled_call_impl = compiled


def run_network(net: torch.nn.Module, batches: Iterable[torch.Tensor], device: torch.device, *,
                tta_flip: bool = False, eval_zoom: float = 1.0, temperature: float = 1.0, cam_layer: str | None = None,
                cam_method: str = "gradcam", cam_targets: Targets = None, cam_contrast: bool = False) -> Iterator[Outputs]:
    """Run uint8 (B, 3, S, S) batches through ``net`` on ``device``, in eval mode (every module's
    mode is restored after), yielding each batch's log-probabilities and, with ``cam_layer``,
    its maps of that layer by ``cam_method`` for ``cam_targets`` (a class for all images, one
    per image, or None: the predicted class; ``cam_contrast``: against the other classes). With
    maps the log-probabilities come from the same forward pass, of the whole image, without
    ``tta_flip`` or ``eval_zoom``; both kinds are scaled by ``temperature``."""
    start = 0
    # A command loads its network on the CPU; the callbacks hand over one already there (a no-op).
    net.to(device)
    with eager(net), evaluating(net):
        for batch in batches:
            x = batch.to(device, non_blocking=True)
            if cam_layer is None:
                out = Outputs(start, batch, _log_probs(net, x, tta_flip, eval_zoom, temperature).cpu())
            else:
                targets = cam_targets[start : start + len(x)] if _per_image(cam_targets) else cam_targets
                cams, logits = grad_cam_with_logits(net, x, cam_layer, targets, cam_method, cam_contrast)
                out = Outputs(start, batch, scaled(logits.log_softmax(dim=1), temperature).cpu(), cams.cpu())
            start += len(x)
            yield out


def _per_image(targets: Targets) -> bool:
    return targets is not None and not isinstance(targets, int) and torch.as_tensor(targets).numel() > 1


@torch.inference_mode()
def _log_probs(net: torch.nn.Module, x: torch.Tensor, tta_flip: bool, eval_zoom: float, temperature: float) -> torch.Tensor:
    """As validation computes them (``catdog.model.evaluation``): bf16 autocast on a GPU; on a CPU
    the caller's precision (module notes), so a CPU autocast around the call is kept."""
    with torch.autocast("cuda", dtype=torch.bfloat16) if x.device.type == "cuda" else contextlib.nullcontext():
        return evaluation.log_probs(net, x, tta_flip, eval_zoom, temperature).float()


def maps_of(net: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int, layer: str,
            method: str = "gradcam", contrast: bool = False, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (N, S, S) maps of the predicted class and (N, classes) log-probabilities of uint8
    (N, 3, S, S) images, on the CPU."""
    outs = list(run_network(net, images.split(batch_size), device, cam_layer=layer, cam_method=method,
                            cam_contrast=contrast, temperature=temperature))
    return torch.cat([o.cams for o in outs]), torch.cat([o.log_probs for o in outs])


def log_probs_of(net: torch.nn.Module, batches: Iterable[torch.Tensor], device: torch.device,
                 tta_flip: bool = False, num_classes: int = 2, eval_zoom: float = 1.0, temperature: float = 1.0) -> torch.Tensor:
    """float32 (N, classes) log-probabilities of all the batches, on the CPU."""
    out = [o.log_probs for o in run_network(net, batches, device, tta_flip=tta_flip, eval_zoom=eval_zoom,
                                            temperature=temperature)]
    return torch.cat(out) if out else torch.zeros(0, num_classes)
