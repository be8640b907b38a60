"""Train SimpleCNN on cats vs dogs.

    python src/train.py data.root=/path/to/kaggle/train trainer.max_epochs=40
    python src/train.py -m optimizer.lr=1e-3,1e-4 trainer.max_epochs=10,20   # a sweep

Hydra composes conf/train.yaml; this script builds what it names (data, model, callbacks,
logger, trainer), fits, tests the best checkpoint on the held-out split, and returns the
optimized metric to a sweeper.
"""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from catdog.allocator import apply_keep_freed_memory
from catdog.command_line import run_command_line
from catdog.errors import UserError
from catdog.event_checksums import use_fast_checksums
from catdog.hparams import HParamsAtFitStart
from catdog.model.checkpoint_load import load_checkpoint, resolve_ckpt_path
from catdog.model.resume import (check_resumable, check_same_network, check_same_optimizer, check_trains_further,
                                 describe_resume, mark_run)
from catdog.preflight import check_accelerator, check_last_epoch_validated, check_space, check_writable
from catdog.resolvers import register_resolvers
from catdog.task import hydra_task, is_multirun

log = logging.getLogger("catdog.train")
register_resolvers()


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Every callback configured under ``callbacks``; ``callbacks.NAME=null`` switches one off,
    and ``trainer.enable_progress_bar=false`` the progress bar (Lightning refuses both at once)."""
    from lightning.pytorch.callbacks import ProgressBar

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]
    if cfg.trainer.get("enable_progress_bar", True) is False:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def build_loggers(cfg: DictConfig) -> list:
    use_fast_checksums()  # TensorBoard's own takes 2% of an epoch at 64 px on 2 cores (catdog/event_checksums.py)
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None and "_target_" in c]


def finish_loggers(loggers: list, exit_code: int = 0) -> None:
    """End the W&B run (marked failed with a non-zero ``exit_code``): Lightning leaves it open,
    and the next sweep job in this process would log into it instead of its own."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:  # never start one to end it
            logger.experiment.finish(exit_code=exit_code)


def sweep_job() -> str | None:
    """This job's folder name (``<n>_<overrides>``) in a sweep; None in a single run."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir).name if is_multirun() else None


KAGGLE_DEFAULT_ROOT = "data/dogs-vs-cats/train"


def check_data_root(root: str | None) -> None:
    """The first check of a run, before anything is printed: the conventional place for Kaggle's
    photos, empty on a fresh clone, gets one line on how to fill it (other paths: find_labelled)."""
    if str(root) == KAGGLE_DEFAULT_ROOT and not Path(root).is_dir():
        raise UserError(f"no training photos at data.root={root}: download train.zip from Kaggle's Dogs vs. Cats "
                        f"competition and unzip it so that {root}/cat.0.jpg exists, or add data.root=/path/to/train "
                        "(`make demo` trains on the built-in data instead)")


def fit_and_test(cfg: DictConfig, trainer: L.Trainer, model, datamodule, ckpt_path: str | None) -> dict[str, float]:
    """Fit, then test the best checkpoint where there is a test split; the final metrics."""
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException as stop:  # an orderly stop (SIGTERM or Ctrl-C): InterruptCheckpoint saved it
        raise SystemExit(stop.code or 128 + signal.SIGTERM) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # With ddp_spawn, setup() ran in the worker processes: this process's datamodule has no splits.
    has_test = len(datamodule.splits["test"]) > 0 if datamodule.splits else cfg.data.get("test_fraction", 0) > 0
    if cfg.get("test") and not has_test:
        log.info("no test split (data.test_fraction=0): the validation metrics are the held-out estimate")
    elif cfg.get("test") and not trainer.interrupted:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics


def tensorboard_logdir(output_dir: str, output_root: str) -> str:
    """The folder to point TensorBoard at: every run's, to compare them, unless this run was put
    outside it (hydra.run.dir=…), where that folder would not show it."""
    return output_root if Path(output_dir).resolve().is_relative_to(Path(output_root).resolve()) else output_dir


def log_outcome(metrics: dict[str, float], cfg: DictConfig, loggers: list) -> None:
    """The final scores, the run folder, and how to browse it: what a user looks for once a run ends."""
    from lightning.pytorch.loggers import TensorBoardLogger

    scores = [f"{k} {metrics[k]:.4f}" for k in ("train/acc", "val/acc", "val/loss", "val/temperature", "test/acc", "test/loss")
              if k in metrics]
    if scores:
        log.info("final: %s", ", ".join(scores))
    log.info("run folder: %s", cfg.paths.output_dir)
    if any(isinstance(logger, TensorBoardLogger) for logger in loggers):  # other loggers have their own viewers
        log.info("browse it:  tensorboard --logdir %s --samples_per_plugin images=1000",
                 tensorboard_logdir(cfg.paths.output_dir, cfg.paths.output_root))


def train(cfg: DictConfig) -> dict:
    """Fit, then test the best checkpoint; returns the final metrics and the optimized one."""
    check_data_root(cfg.data.get("root"))
    check_last_epoch_validated(cfg.trainer.get("max_epochs"), cfg.trainer.get("check_val_every_n_epoch"))
    check_accelerator(cfg.trainer.get("accelerator"))
    apply_keep_freed_memory(cfg.get("keep_freed_memory"))  # before the first batch: each step then reuses the last one's pages
    L.seed_everything(cfg.seed, workers=True)
    job = sweep_job()
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_root, cfg.paths.output_dir, job)
    model = instantiate(cfg.model)
    if ckpt_path:  # refuse a file that would run code, or a network of another shape, now, not after the data is prepared
        ckpt = load_checkpoint(ckpt_path, mmap=True)  # memory-mapped: the checks read no weights
        check_resumable(ckpt_path, ckpt)
        check_same_network(ckpt_path, ckpt, model, cfg)  # before this run marks its folder: `last` still means that run
        check_same_optimizer(ckpt_path, ckpt, cfg)
        check_trains_further(ckpt_path, ckpt, cfg.trainer.get("max_epochs"))
        log.info(describe_resume(ckpt_path, ckpt, cfg))

    check_writable(cfg.paths.output_dir, "the run folder")
    if not cfg.trainer.get("fast_dev_run"):  # a smoke test (debug=default) saves nothing to resume
        mark_run(cfg.paths.output_dir, job)  # from now on, ckpt_path=last means this run
    datamodule = instantiate(cfg.data)
    # Two checkpoints (best and last), each the weights plus about twice as much optimizer state.
    check_space(cfg.paths.output_dir, 2 * 3 * sum(p.numel() * p.element_size() for p in model.parameters()) + (64 << 20),
                "the run folder")
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    loggers = build_loggers(cfg)
    trainer = instantiate(cfg.trainer, callbacks=[*build_callbacks(cfg), HParamsAtFitStart(loggers, cfg)],
                          logger=loggers or False)

    try:
        metrics = fit_and_test(cfg, trainer, model, datamodule, ckpt_path)
    except BaseException:
        finish_loggers(loggers, exit_code=1)
        raise
    finish_loggers(loggers)

    if trainer.is_global_zero:
        log_outcome(metrics, cfg, loggers)
    objective = metrics.get(cfg.optimized_metric, math.nan)
    return {"metrics": metrics, "objective": objective, "best_checkpoint": getattr(trainer.checkpoint_callback, "best_model_path", "")}


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@hydra_task
def main(cfg: DictConfig) -> dict:
    return train(cfg)


if __name__ == "__main__":
    run_command_line(main)
