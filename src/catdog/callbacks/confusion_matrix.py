"""The validation confusion matrix, drawn each epoch (``val/confusion_matrix``) for every logger
that takes images (catdog.log_image), and its picture, which eval.py saves too.

The matrix is a torchmetrics metric fed with what ``validation_step`` returns (the batch's class
log-probabilities), so under DDP it counts every rank's images."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw
from torchmetrics.classification import MulticlassConfusionMatrix

from catdog.gradcam.render import TITLE_HEIGHT, title_font
from catdog.log_image import log_image


class ConfusionMatrixLogger(L.Callback):
    def __init__(self) -> None:
        self.matrix: MulticlassConfusionMatrix | None = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.matrix is None:
            self.matrix = MulticlassConfusionMatrix(len(pl_module.classes), validate_args=False)
        self.matrix = self.matrix.to(pl_module.device)
        self.matrix.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, torch.Tensor):  # validation_step's log-probabilities
            self.matrix.update(outputs.exp(), batch[1])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.matrix is None or not self.matrix.update_called:
            return
        matrix = self.matrix.compute().cpu().numpy()  # under DDP a collective: every rank calls it
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        title = f"epoch {epoch}: accuracy {np.trace(matrix) / max(matrix.sum(), 1):.3f}"
        picture = confusion_matrix_image(matrix, pl_module.classes, title)
        log_image(trainer, "val/confusion_matrix", picture, epoch)


def confusion_matrix_image(matrix: np.ndarray, classes: list[str], title: str = "") -> np.ndarray:
    """A small labelled confusion matrix (rows: true class, columns: predicted), (H, W, 3) uint8."""
    n, cell, margin = len(classes), 64, 56
    canvas = Image.new("RGB", (margin + n * cell, TITLE_HEIGHT + margin + n * cell), (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), title_font()
    draw.text((4, 2), title, fill=(0, 0, 0), font=font)
    peak = max(int(matrix.max()), 1)
    for i in range(n):
        draw.text((4, TITLE_HEIGHT + margin + i * cell + cell // 2 - 6), f"true {classes[i]}", fill=(0, 0, 0), font=font)
        draw.text((margin + i * cell + 6, TITLE_HEIGHT + margin - 18), f"pred {classes[i]}", fill=(0, 0, 0), font=font)
        for j in range(n):
            shade = int(255 - 200 * matrix[i, j] / peak)
            x, y = margin + j * cell, TITLE_HEIGHT + margin + i * cell
            draw.rectangle((x, y, x + cell - 2, y + cell - 2), fill=(shade, shade, 255))
            draw.text((x + cell // 2 - 10, y + cell // 2 - 6), str(int(matrix[i, j])), fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
