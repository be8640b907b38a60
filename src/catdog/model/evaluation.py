"""What scoring a network means here, in one place for training (val/test) and for eval.py and
predict.py: class log-probabilities, averaged with the mirror image on request, and the metrics,
named as training logs them."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score


def log_probs(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta_flip: bool = False) -> torch.Tensor:
    """float32 (B, classes) log-probabilities of ``forward(x)``; with ``tta_flip`` those of the
    mean probability of each image and its mirror image."""
    log_p = forward(x).float().log_softmax(dim=1)
    if tta_flip:
        mirrored = forward(x.flip(-1)).float().log_softmax(dim=1)
        log_p = torch.logsumexp(torch.stack([log_p, mirrored]), dim=0) - math.log(2.0)
    return log_p


def metric_collection(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy, macro F1 and AUROC, as ``<prefix>acc``, ``<prefix>f1``, ``<prefix>auroc``."""
    # validate_args=False: the checks read values back from the GPU, a stall on every step.
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
        "f1": MulticlassF1Score(num_classes, average="macro", validate_args=False),
        "auroc": MulticlassAUROC(num_classes, validate_args=False),
    }, prefix=prefix)
