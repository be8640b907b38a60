"""What scoring a network means here, in one place for training (val/test) and for eval.py and
predict.py: class log-probabilities, of the centre zoom and averaged with the mirror image on
request, scaled by the temperature fitted on validation where there is one, and the metrics, named as training logs them."""

from __future__ import annotations

import math
from typing import Callable

import torch

from catdog.data.augment import centre_zoom
from catdog.errors import UserError
from catdog.model.calibration import scaled


def checked_zoom(value, name: str = "eval_zoom") -> float:
    """``value`` as the zoom ``log_probs`` takes, or one clear error naming the setting ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:  # above 1: a black frame
        raise UserError(f"{name}={value} must be above 0 and at most 1: the share of each image's side scored "
                        "(1: the whole image)")
    return float(value)


def log_probs(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta_flip: bool = False,
              zoom: float = 1.0, temperature: float = 1.0) -> torch.Tensor:
    """float32 (B, classes) log-probabilities of ``forward(x)``; with ``zoom`` below 1, of the centre
    ``zoom`` of each image's side enlarged (``centre_zoom``); with ``tta_flip``, of the mean
    probability of that view and its mirror image; scaled by ``temperature`` (``catdog.model.calibration``)."""
    if zoom != 1.0:
        x = centre_zoom(x, zoom)
    log_p = forward(x).float().log_softmax(dim=1)
    if tta_flip:
        mirrored = forward(x.flip(-1)).float().log_softmax(dim=1)
        log_p = torch.logsumexp(torch.stack([log_p, mirrored]), dim=0) - math.log(2.0)
    return scaled(log_p, temperature)


def metric_collection(num_classes: int, prefix: str):
    """A torchmetrics MetricCollection: accuracy, macro F1 and AUROC, as ``<prefix>acc``,
    ``<prefix>f1``, ``<prefix>auroc``."""
    # Imported here: torchmetrics takes seconds to import (torchvision's models come with it),
    # which predict.py and cam.py, scoring no metric, should not pay on every start.
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score

    # validate_args=False: the checks read values back from the GPU, a stall on every step.
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
        "f1": MulticlassF1Score(num_classes, average="macro", validate_args=False),
        "auroc": MulticlassAUROC(num_classes, validate_args=False),
    }, prefix=prefix)


def positive_class(classes: list[str]) -> int:
    """The class whose probability is reported (P(dog), Kaggle's label): "dog" where the classes
    have it, else the last one (the positive class of a binary problem, by convention)."""
    return classes.index("dog") if "dog" in classes else len(classes) - 1


def classification_metrics(log_probs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    """The test metrics training logs (accuracy, macro F1, AUROC), the log loss and the confusion
    matrix (rows: true class, columns: predicted), named as training names them."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    log_p = torch.as_tensor(log_probs, dtype=torch.float64)
    probs = log_p.exp().float()
    y = torch.as_tensor(targets, dtype=torch.long)
    return {
        **{k: float(v) for k, v in metric_collection(num_classes, "test/")(probs, y).items()},
        "test/loss": float(torch.nn.functional.nll_loss(log_p, y)),  # the log loss, Kaggle's score
        "confusion_matrix": MulticlassConfusionMatrix(num_classes)(probs, y).tolist(),
    }
