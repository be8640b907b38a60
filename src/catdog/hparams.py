"""The run's hyperparameters in TensorBoard's HParams tab, beside the metrics they gave, and in
every other logger's own place for them (CSV: hparams.yaml; MLflow: params; W&B: config)."""

from __future__ import annotations

import math

import lightning as L
from omegaconf import DictConfig, ListConfig, OmegaConf

# Shown beside each run's hyperparameters: the scalars the run logs under these names.
HPARAM_METRICS = ("val/acc_best", "val/acc", "val/loss", "test/acc", "test/loss")


def flat_params(cfg: DictConfig, skip=("paths", "callbacks", "logger", "hydra", "model.optimizer", "model.scheduler")) -> dict[str, float | int | str | bool]:
    """The config as ``{"optimizer.lr": 0.001, ...}`` scalars, for TensorBoard's HParams tab."""
    out: dict = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if str(key).startswith("_") or name in skip:
                continue
            if isinstance(value, DictConfig):
                walk(value, name + ".")
            elif isinstance(value, ListConfig):
                out[name] = str(OmegaConf.to_container(value))
            elif value is None:
                out[name] = "null"
            elif isinstance(value, (int, float, str, bool)):
                out[name] = value

    walk(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)), "")
    return out


def log_hparams(loggers: list, cfg: DictConfig) -> None:
    """Register the run's hyperparameters and the metrics to show beside them. The metric values
    are the scalars logged during the run (no placeholder ``hp_metric``)."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.tensorboard.summary import hparams

    metrics = {name: math.nan for name in HPARAM_METRICS}
    params = flat_params(cfg)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment.file_writer
            for summary in hparams(params, metrics):
                writer.add_summary(summary)
        else:  # their metrics are the logged scalars already: the parameters are all they need
            logger.log_hyperparams(params)


class HParamsAtFitStart(L.Callback):
    """``log_hparams`` at fit start, once the data is read: a run that fails on its data (a wrong
    folder, unreadable photos) leaves no empty run in TensorBoard."""

    def __init__(self, loggers: list, cfg: DictConfig) -> None:
        self.loggers, self.cfg = loggers, cfg

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log_hparams(self.loggers, self.cfg)
