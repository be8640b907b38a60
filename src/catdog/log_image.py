"""One picture to every logger of the run that takes images: TensorBoard, MLflow, W&B.

The callbacks (Grad-CAM maps, the confusion matrix) draw a picture once and hand it here; the
CSV logger takes no images, and loggers not listed are skipped. ``step`` is the epoch:
TensorBoard's and MLflow's step slider walks through the epochs; W&B attaches the image to the
current global step (its x-axis for every metric Lightning logs) with the epoch as its caption.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

from catdog.gradcam.render import png_bytes

# The Grad-CAM writer thread and the main thread (confusion matrix) both log images; MLflow's
# first image of a run sets a run tag, and two at once insert it twice (a database error).
_one_at_a_time = threading.Lock()


def log_image(trainer, tag: str, picture: np.ndarray | torch.Tensor, step: int, dataformats: str = "HWC",
              encoded: bytes | None = None) -> None:
    """``picture``: uint8, (H, W, 3) with ``dataformats="HWC"`` or (3, H, W) with ``"CHW"``; ``encoded``: the
    same picture already encoded for TensorBoard (``render.png_bytes`` or ``render.jpeg_bytes``: its image
    tab shows either); without it, PNG."""
    with _one_at_a_time:
        for logger in trainer.loggers:
            _log_to(logger, tag, picture, step, dataformats, encoded)


def _log_to(logger, tag: str, picture, step: int, dataformats: str, encoded: bytes | None) -> None:
    if isinstance(logger, TensorBoardLogger):
        # add_image's own PNG encoding uses zlib level 6 (render.png_bytes: why level 1), so encode
        # here and hand the summary to the writer's file writer, as add_image itself does.
        summary = _image_summary(tag, _hwc(picture, dataformats), encoded)
        logger.experiment._get_file_writer().add_summary(summary, step)
    elif isinstance(logger, MLFlowLogger):
        logger.experiment.log_image(logger.run_id, _hwc(picture, dataformats), key=tag, step=step)
    elif isinstance(logger, WandbLogger):
        logger.log_image(key=tag, images=[_hwc(picture, dataformats)], caption=[f"epoch {step}"])


def _image_summary(tag: str, picture: np.ndarray, encoded: bytes | None = None):
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width, channels = picture.shape
    image = Summary.Image(height=height, width=width, colorspace=channels,
                          encoded_image_string=encoded if encoded is not None else png_bytes(picture))
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def _hwc(picture: np.ndarray | torch.Tensor, dataformats: str) -> np.ndarray:
    array = picture.numpy() if isinstance(picture, torch.Tensor) else np.asarray(picture)
    return np.ascontiguousarray(array.transpose(1, 2, 0) if dataformats == "CHW" else array)
