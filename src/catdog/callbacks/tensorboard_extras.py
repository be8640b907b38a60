"""What TensorBoard shows beyond images and scalars:

- ``val/pr_curve`` (PR CURVES tab), every epoch: precision against recall of the positive class
  ("dog", ``catdog.model.evaluation.positive_class``) over the validation images;
- at the end of training, the embedding projector (PROJECTOR tab): each validation image as a
  point at its penultimate features (the input of the network's last linear layer), with its
  thumbnail and its labels (true, predicted, right or wrong), so a user can browse which photos
  the network groups together.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import CatMetric

from catdog.inference import log_probs_of
from catdog.model.evaluation import positive_class

THUMBNAIL = 32  # px: the projector packs every thumbnail into one sprite image


def _writers(trainer: L.Trainer) -> list:
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


class TensorBoardExtras(L.Callback):
    def __init__(self, pr_curve: bool = True, projector: bool = True, projector_images: int = 500) -> None:
        self.pr_curve, self.projector, self.projector_images = pr_curve, projector, projector_images
        self.probs, self.labels = CatMetric(), CatMetric()  # gathered from every rank under DDP

    # -- the precision-recall curve, every epoch ------------------------------------------------

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.probs, self.labels = self.probs.to(pl_module.device), self.labels.to(pl_module.device)
        self.probs.reset()
        self.labels.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.pr_curve and isinstance(outputs, torch.Tensor):  # validation_step's log-probabilities
            self.probs.update(outputs.exp()[:, positive_class(pl_module.classes)])
            self.labels.update(batch[1])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self.pr_curve or trainer.sanity_checking or not self.probs.update_called:
            return
        probs, labels = self.probs.compute(), self.labels.compute()  # a collective: every rank calls it
        if trainer.is_global_zero:
            positive = labels == positive_class(pl_module.classes)
            for writer in _writers(trainer):
                writer.add_pr_curve("val/pr_curve", positive.cpu(), probs.float().cpu(), trainer.current_epoch)

    # -- the embedding projector, at the end ------------------------------------------------------

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.projector or not trainer.is_global_zero or trainer.interrupted or not _writers(trainer):
            return
        dm = trainer.datamodule
        idx = dm.splits["val"][: self.projector_images]
        images, labels = dm.load_uint8(idx), dm.decoded.labels[idx]
        features, probs = penultimate_features(pl_module.net, images, pl_module.device)
        classes, predicted = pl_module.classes, probs.argmax(dim=1).tolist()
        metadata = [[classes[t], classes[p], "right" if t == p else "wrong"] for t, p in zip(labels.tolist(), predicted)]
        thumbnails = nn.functional.interpolate(images.float() / 255, size=(THUMBNAIL, THUMBNAIL), mode="bilinear",
                                               antialias=True, align_corners=False)
        for writer in _writers(trainer):
            writer.add_embedding(features, metadata=metadata, label_img=thumbnails, global_step=trainer.current_epoch,
                                 tag="val_penultimate_features", metadata_header=["true", "predicted", "result"])
            writer.flush()


def penultimate_features(net: nn.Module, images: torch.Tensor, device: torch.device,
                         batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) inputs of ``net``'s last linear layer and (N, classes) probabilities, on the CPU."""
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    handle = last.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().float().cpu()))
    try:
        probs = log_probs_of(net, images.split(batch_size), device).exp()
    finally:
        handle.remove()
    return torch.cat(captured), probs
