"""The LightningModule: the training step (seeded augmentation on the device, MixUp/CutMix,
cross-entropy), torchmetrics, the optimizer and LR schedule that Hydra hands over as partials
(``_partial_: true``), and with ``calibrate`` a temperature fitted on each validation epoch.

The network is any ``nn.Module`` that maps (N, 3, H, W) images, uint8 or float in [0, 1], to
class scores (SimpleCNN by default; ``catdog.model.image_input`` is the input contract); the
number of classes comes from ``classes`` (``data.classes``), not from the network's layers.
"""

from __future__ import annotations

import inspect
import math
from functools import partial

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection

from catdog.data.augment import DeviceAugment
from catdog.errors import UserError
from catdog.model import evaluation
from catdog.model.calibration import fit_temperature
from catdog.model.checkpoint_load import stored_temperature
from catdog.model.image_input import to_channels_last
from catdog.model.surroundings_penalty import surroundings_share


def _batch_mixing(mixup: float, cutmix: float, num_classes: int):
    """torchvision's MixUp and/or CutMix (one of them per batch), or None when both are off."""
    from torchvision.transforms import v2

    chosen = [t(alpha=a, num_classes=num_classes) for t, a in ((v2.MixUp, mixup), (v2.CutMix, cutmix)) if a > 0]
    return None if not chosen else chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)


class Classifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        classes: list[str],
        optimizer: partial,
        scheduler: partial | None = None,
        scheduler_interval: str | None = None,
        augment: dict | None = None,
        compile_augment: bool = False,
        seed: int = 42,
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        surroundings_penalty: float = 0.0,
        tta_flip: bool = False,
        eval_zoom: float = 1.0,
        calibrate: bool = False,
        compile: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if scheduler_interval not in (None, "epoch", "step"):
            raise UserError(f"model.scheduler_interval={scheduler_interval!r} must be 'epoch', 'step' or null")
        self.net, self.classes = net, [str(c) for c in classes]
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval or _interval_of(scheduler)
        self.label_smoothing, self.seed = label_smoothing, seed
        self.compile_net, self.channels_last, self.tta_flip = compile, channels_last, tta_flip
        self.eval_zoom = evaluation.checked_zoom(eval_zoom, "model.eval_zoom")
        # Fitted on each validation epoch with ``calibrate`` and saved in that epoch's checkpoints; it
        # scales the test's probabilities and those of eval.py and predict.py, never validation's own.
        self.calibrate, self.temperature = bool(calibrate), 1.0
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.augment, self.compile_augment = DeviceAugment(**(augment or {})), compile_augment
        self._train_augment = None  # made on first use: a compiled function does not pickle (ddp_spawn)
        n = len(self.classes)
        self.mix = _batch_mixing(mixup, cutmix, n)
        self.surroundings_penalty = _checked_penalty(surroundings_penalty, self.augment.frame_swap)
        self.val_metrics = evaluation.metric_collection(n, "val/")
        self.test_metrics = evaluation.metric_collection(n, "test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so a resumed run remembers its best
        self.run_config: dict = {}  # the resolved Hydra config, set by train.py, saved in checkpoints

    def setup(self, stage: str) -> None:
        # Here rather than in configure_model: weight-averaging callbacks copy the module in
        # their own setup, which runs first, and must copy the plain module, not a compiled one.
        if self.channels_last:
            to_channels_last(self.net)
        if self.compile_net and not getattr(self.net, "_compiled_call_impl", None):
            self.net.compile()  # in place: unlike torch.compile(net), state_dict keys stay the same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No channels-last copy of x here: the network's ImageInput writes it so, and a convolution
        # with channels-last weights takes any other input to channels-last itself.
        if self.training:
            return self.net(x)  # compiled, when model.compile is on
        # Evaluation runs eagerly: it is a small share of the work, and compiling it too would
        # cost two more compilations (eval mode, and the ragged last batch) on every run.
        return self.net.forward(x)

    # -- steps -----------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        images, y = batch  # uint8 (B, 3, S, S) on the device
        self._seed_step(batch_idx)
        x, keep = self._augmented(images, y)
        mixed, target = self.mix(x, y) if self.mix is not None else (x, y)  # soft targets when mixing
        logits = self(mixed)
        loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        # On the images before MixUp/CutMix, whose swapped-in surroundings are still where the boxes say
        share = surroundings_share(self.net, x, y, keep) if self.surroundings_penalty else None
        total = loss if share is None else loss + self.surroundings_penalty * share
        self._watch_loss(total, last_of_epoch=batch_idx + 1 >= self.trainer.num_training_batches)
        self._tally(loss, logits, y, share)
        return total

    def _seed_step(self, batch_idx: int) -> None:
        """Everything random in a training step (augmentation, dropout, MixUp) draws from a seed
        made of (seed, epoch, step), not from a running state: a run resumed from any checkpoint,
        even one saved mid-epoch, then repeats the uninterrupted run exactly. (Lightning passes
        the batch's index within the epoch, restored on resume.) Under DDP each rank draws its own."""
        trainer = self.trainer
        key = [self.seed, trainer.current_epoch, batch_idx] + ([trainer.global_rank] if trainer.world_size > 1 else [])
        _seed_generators(int(np.random.SeedSequence(key).generate_state(1)[0]), self.device)

    def _augmented(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The augmented batch and the frame swap's kept boxes (for the surroundings penalty)."""
        if self._train_augment is None:
            # Compiled, ~100 small operations per batch become a few fused kernels: on a GPU their
            # launches would otherwise take longer than the training step itself. Every batch has
            # the same shape (the ragged last one is dropped), so it compiles once.
            fn = self.augment.with_kept_boxes
            self._train_augment = torch.compile(fn, dynamic=False) if self.compile_augment else fn
        return self._train_augment(images, labels=labels)

    # -- training metrics: summed on the device, logged sparingly ----------------------------
    # Not self.log and torchmetrics on every step: their bookkeeping costs more host time than a
    # whole training step of this small network on a GPU, which would then sit idle.

    def on_train_epoch_start(self) -> None:
        self._sums = torch.zeros(3, device=self.device)  # summed loss, correct predictions, surroundings share
        self._seen = 0

    def _tally(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, share: torch.Tensor | None) -> None:
        with torch.no_grad():
            self._sums[0] += loss.detach().float() * len(y)
            self._sums[1] += (logits.argmax(dim=1) == y).sum()
            if share is not None:
                self._sums[2] += share.detach() * len(y)
        self._seen += len(y)
        every = self.trainer.log_every_n_steps
        if every and self.trainer.global_step % every == 0:  # one read-back every few steps, for the curve
            for logger in self.loggers:
                logger.log_metrics({"train/loss_step": float(loss.detach())}, step=self.trainer.global_step)

    def on_train_epoch_end(self) -> None:
        if self._seen:
            loss, correct, share = (self._sums / self._seen).tolist()
            self.log_dict({"train/loss": loss, "train/acc": correct}, prog_bar=True)
            if self.surroundings_penalty:  # how much of the input gradient the swapped-in surroundings still get
                self.log("train/surroundings_share", share)

    # -- a non-finite loss stops the run -------------------------------------------------

    def on_train_start(self) -> None:
        self.on_train_epoch_start()  # Lightning skips that hook for an epoch resumed in the middle
        self._first_bad_step = torch.tensor(-1, device=self.device)
        self._step = torch.tensor(self.trainer.global_step, device=self.device)

    def _watch_loss(self, loss: torch.Tensor, last_of_epoch: bool) -> None:
        """Note the first step whose loss is nan or inf, on the device (no wait for the GPU); look at
        it every step on a CPU, every 50 steps on a GPU, and always before an epoch's checkpoint."""
        bad = ~torch.isfinite(loss.detach())
        self._first_bad_step = torch.where(bad & (self._first_bad_step < 0), self._step, self._first_bad_step)
        self._step += 1
        if self.device.type == "cpu" or last_of_epoch or self.trainer.global_step % 50 == 0:
            self._stop_if_loss_was_bad()

    def _stop_if_loss_was_bad(self) -> None:
        step = int(self._first_bad_step)
        if step < 0:
            return
        last = next((c.path for c in self.trainer.callbacks if hasattr(c, "path") and c.path.name == "last.ckpt"), None)
        saved = str(last) if last is not None and last.exists() else "none saved yet"
        raise UserError(
            f"the training loss became nan or inf at epoch {self.trainer.current_epoch}, step {step}: training stopped; "
            f"the last good checkpoint is kept ({saved}). Try a lower optimizer.lr (it is {self._lr():g})"
        )

    def _lr(self) -> float:
        return self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else float("nan")

    def log_probs(self, x: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Class log-probabilities of the view ``eval_zoom`` picks, averaged with its mirror image with
        ``tta_flip``, scaled by ``temperature`` (by default the one fitted on validation)."""
        temperature = self.temperature if temperature is None else temperature
        return evaluation.log_probs(self, x, self.tta_flip, self.eval_zoom, temperature)

    def _eval_step(self, batch, metrics: MetricCollection, loss_metric: MeanMetric, temperature: float | None = None):
        x, y = batch
        log_p = self.log_probs(x, temperature)
        # The log loss, without label smoothing: comparable across recipes (and Kaggle's score).
        loss_metric.update(F.nll_loss(log_p, y), weight=len(y))
        metrics.update(log_p.exp(), y)
        return log_p

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def validation_step(self, batch, batch_idx):
        # The network's own probabilities (temperature 1): what the temperature is fitted to, and a
        # val/loss that compares across epochs and recipes.
        log_p = self._eval_step(batch, self.val_metrics, self.val_loss, temperature=1.0)
        if self.calibrate:
            self._val_outputs.append((log_p, batch[1]))
        return log_p  # for callbacks (confusion matrix)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict(values, prog_bar=True)
        self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        if not self.trainer.sanity_checking:  # the sanity check's few batches are no epoch
            self.val_acc_best.update(values["val/acc"])
            self.log("val/acc_best", self.val_acc_best.compute())
            if self.calibrate:
                self._fit_temperature()
        self.val_metrics.reset()
        self.val_loss.reset()

    def _fit_temperature(self) -> None:
        """Fit the temperature on this epoch's validation images (every rank's), before the epoch's
        checkpoints are saved (ModelCheckpoint saves on validation end, after this hook)."""
        if not self._val_outputs:  # no validation batch ran (limit_val_batches=0)
            return
        log_p, y = (torch.cat(t) for t in zip(*self._val_outputs))
        if self.trainer.world_size > 1:
            log_p, y = self.all_gather(log_p).flatten(0, 1), self.all_gather(y).flatten()
        self.temperature = fit_temperature(log_p, y)
        self.log("val/temperature", self.temperature)
        self._val_outputs = []

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, self.test_metrics, self.test_loss)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.log("test/loss", self.test_loss.compute())
        self.test_metrics.reset()
        self.test_loss.reset()

    # -- optimisation ----------------------------------------------------------------------

    def configure_optimizers(self):
        try:
            optimizer = self.optimizer_factory(params=self.parameters())
        except ValueError as err:  # torch.optim's checks of its settings ("Invalid learning rate: -1")
            raise UserError(f"optimizer: {err}: fix it in optimizer.*, e.g. optimizer.lr=1e-3") from None
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, **self._run_length_args(optimizer))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval, "name": "train/lr"},
        }

    def _run_length_args(self, optimizer) -> dict:
        """Fill in what a schedule needs to know about the run's length, unless the config set it:
        so the same schedule config keeps learning to the end at any ``trainer.max_epochs``."""
        given = self.scheduler_factory.keywords
        params = inspect.signature(self.scheduler_factory.func).parameters
        steps = self._total_steps()
        length = steps if self.scheduler_interval == "step" else self.trainer.max_epochs
        fill = {
            "total_steps": steps,  # OneCycleLR, stepped per batch
            "T_max": length,  # CosineAnnealingLR
            "max_lr": optimizer.param_groups[0]["lr"],  # OneCycleLR's peak: the optimizer's lr
        }
        if "pct_start" in params and float(given.get("pct_start", params["pct_start"].default) * steps) == 1.0:
            fill["total_steps"] = steps + 1  # OneCycleLR would divide by zero: its warm-up would end at step 0
        return {k: v for k, v in fill.items() if k in params and k not in given and not (k == "total_steps" and "epochs" in given)}

    def _total_steps(self) -> int:
        """Optimizer steps in the whole run. Not ``trainer.estimated_stepping_batches``: that starts
        iterating the training data before a checkpoint's progress is restored, so a run resumed
        mid-epoch would replay the wrong batches."""
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        batches = len(trainer.datamodule.train_dataloader())
        limit = trainer.limit_train_batches
        batches = min(batches, int(limit)) if isinstance(limit, int) else int(batches * limit)
        return max(1, math.ceil(batches / trainer.accumulate_grad_batches) * trainer.max_epochs)

    # -- checkpoints -----------------------------------------------------------------------

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming with a longer run (``trainer.max_epochs`` raised) stretches the LR schedule to
        the new end: the schedule's length comes from this run (``_run_length_args``), not from
        the checkpoint, which would end it early (OneCycleLR would even refuse to step on). The
        temperature is the one fitted to these weights: testing the best checkpoint uses its own."""
        for state in checkpoint.get("lr_schedulers", []):
            for key in ("total_steps", "_schedule_phases", "T_max"):
                state.pop(key, None)
        self.temperature = stored_temperature(checkpoint)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Plain data beside the weights: enough to rebuild the network without unpickling code."""
        checkpoint["catdog"] = {
            "net": dict(getattr(self.net, "config", None) or {}),
            "net_class": f"{type(self.net).__module__}.{type(self.net).__qualname__}",
            "classes": self.classes,
            "temperature": self.temperature,  # 1 unless fitted (model.calibrate)
            "config": self.run_config,
        }


def _checked_penalty(weight: float, frame_swap: float) -> float:
    if weight < 0:
        raise UserError(f"model.surroundings_penalty={weight} must be 0 (off) or a positive weight")
    if weight and not frame_swap:
        raise UserError(f"model.surroundings_penalty={weight} acts on swapped surroundings, and model.augment.frame_swap=0 "
                        "swaps none: set model.surroundings_penalty=0 or model.augment.frame_swap > 0")
    return float(weight)


def _interval_of(scheduler: partial | None) -> str:
    """A schedule whose length the run fills in (OneCycleLR's total_steps, CosineAnnealingLR's
    T_max) steps after every batch, so it is smooth at any run length; one that sets its own
    period in the config (StepLR's step_size, the original's "every 3 epochs") steps per epoch."""
    if scheduler is None:
        return "epoch"
    params = inspect.signature(scheduler.func).parameters
    filled = [k for k in ("total_steps", "T_max") if k in params and k not in scheduler.keywords]
    return "step" if filled else "epoch"


def _seed_generators(seed: int, device: torch.device) -> None:
    """Seed the CPU's generator and this device's, not every device's as ``torch.manual_seed``
    does: that also queues seeds for CUDA, XPU and MTIA, capturing a Python stack trace for each
    (about 2 ms a step on a small CPU, where the training step itself can take 10 ms)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()].manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)
