"""Watch what the network looks at, epoch by epoch, in TensorBoard (and MLflow, W&B).

At the end of validation (every ``every_n_epochs``) this callback computes Grad-CAM maps for a
fixed, class-balanced set of validation images, chosen once, so the same images are shown every
epoch and TensorBoard's step slider (step = epoch) walks through how the attention changes:

- ``gradcam/grid``: one row per image, image | heatmap | overlay, titled with the true label,
  the prediction and P(dog); ``gradcam/sample_00`` ...: each overlay under its own tag;
- ``gradcam/pointing_game`` and ``gradcam/energy_in_box``: where the data set has object boxes,
  how well the maps of a larger validation subset point at the object;
- with ``probe`` (an Oxford-IIIT Pet folder, decoded once at fit start at the training image
  size, never trained on): ``gradcam/probe/energy_on_animal``, ``auroc_on_animal`` (the maps'
  pixel AUROC against the mask), ``max_on_animal`` (strictly on the mask),
  ``pointing_on_animal`` (within the pointing tolerance) and
  ``pointing_on_head``, beside the same scores of a centred Gaussian map
  (``gradcam/probe_centre/...``) and a uniform one (``gradcam/probe_uniform/...``), and
  ``gradcam/probe_grid`` with the animal's outline on each overlay;
- ``gradcam/deletion_auc`` and ``gradcam/insertion_auc`` (``catdog.gradcam.faithfulness``) on
  ``faithfulness_images`` validation images, beside a random order's (``gradcam/random/...``):
  whether the maps are faithful to the model, on any data;
- at the end of training, ``gradcam/top_losses``: the most confidently wrong validation images
  with their maps; the last grid, the probe's and the gallery are also saved as JPEGs in the run folder.

The maps are computed on the training device by ``catdog.inference.run_network`` (milliseconds),
in the precision validation runs in (``_as_validated``); encoding the pictures and writing them happens
on a background thread, so training does not wait for it.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning as L
import torch

from catdog.errors import UserError
from catdog.gradcam.faithfulness import STEPS, deletion_insertion
from catdog.gradcam.maps import find_layers, weight_fn
from catdog.gradcam.probe import Probe, load_probe, probe_grid, probe_scores, reference_scores, uniform_maps
from catdog.gradcam.render import Row, cam_grid, jpeg_bytes, overlay, palette, save_picture, titled_rows
from catdog.gradcam.scoring import energy_in_box, pointing_game
from catdog.inference import log_probs_of, maps_of
from catdog.log_image import log_image

log = logging.getLogger(__name__)


@contextmanager
def _naming(setting: str):
    """A wrong value of this callback's ``setting`` says which setting it is, as the user types it."""
    try:
        yield
    except UserError as err:
        raise UserError(f"callbacks.gradcam.{setting}: {err}") from None


class GradCamLogger(L.Callback):
    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 8,
        layer: str = "pool1",
        method: str = "hirescam",
        score_images: int = 48,
        top_losses: int = 8,
        colormap: str = "jet",
        batch_size: int = 128,
        probe: str | None = None,
        probe_images: int | None = 64,
        faithfulness_images: int = 8,
        faithfulness_steps: int = STEPS,
        faithfulness_every_n_epochs: int = 5,
    ) -> None:
        self.every_n_epochs, self.num_images, self.layer, self.method = every_n_epochs, num_images, layer, method
        self.score_images, self.top_losses, self.colormap, self.batch_size = score_images, top_losses, colormap, batch_size
        with _naming("colormap"):  # a typo stops the run now, not at its first validation
            palette(colormap)
        with _naming("method"):
            weight_fn(method)
        self.probe_root, self.probe_images = probe, probe_images
        self.faithfulness_images, self.faithfulness_steps = faithfulness_images, faithfulness_steps
        self.faithfulness_every_n_epochs = faithfulness_every_n_epochs
        self.fixed: dict | None = None
        self.scored: dict | None = None
        self.faithful: dict | None = None
        self.probe: Probe | None = None
        self.probe_references: dict | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradcam-writer")
        self._pending: list[Future] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with _naming("layer"):  # the first moment the network exists: before the sanity check and its progress bar
            find_layers(pl_module.net, self.layer)

    # -- choosing the images -----------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        self.fixed = dm.sample_images(self.num_images)
        boxed = dm.sample_images(self.score_images) if self.fixed["boxes"] is not None and self.score_images else None
        self.scored = boxed if boxed is not None and boxed["boxes"] is not None else None
        self.faithful = dm.sample_images(self.faithfulness_images) if self.faithfulness_images else None
        if self.probe_root and trainer.is_global_zero:
            self.probe = load_probe(self.probe_root, dm.image_size, self.probe_images, what="callbacks.gradcam.probe")
            self.probe_references = reference_scores(self.probe)  # they ignore the model: once
            if left_out := [*self.probe.skipped, *self.probe.ignored]:
                log.warning("probe %s: %d files or annotations not used (first: %s: %s)", self.probe_root,
                            len(left_out), *left_out[0])

    # -- per epoch ---------------------------------------------------------------------

    def _due(self, trainer: L.Trainer) -> bool:
        """An epoch that gets maps: the same answer on every DDP rank (only rank zero draws them)."""
        if trainer.sanity_checking or self.fixed is None:
            return False
        return _every(trainer, self.every_n_epochs)

    def _cams(self, trainer, pl_module, sets: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Maps and class probabilities of each set of uint8 (N, 3, S, S) images, on the CPU, where
        the few pictures are drawn: all sets together on the module's device, in fewer and fuller
        batches than set by set (each batch pays a fixed cost: hooks, a backward pass, small kernels)."""
        images = torch.cat(list(sets.values()))
        with _as_validated(trainer):
            cams, log_probs = maps_of(pl_module.net, images, pl_module.device, self.batch_size, self.layer, self.method)
        sizes = [len(v) for v in sets.values()]
        return dict(zip(sets, zip(cams.split(sizes), log_probs.exp().split(sizes))))

    def _rows(self, sample: dict, cams, probs, classes: list[str]) -> list[Row]:
        return titled_rows(sample["images"], sample["labels"], cams, probs, classes, sample.get("boxes"))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._due(trainer) or not trainer.is_global_zero:
            return
        epoch, classes = trainer.current_epoch, pl_module.classes
        faithful_due = self.faithful is not None and _every(trainer, self.faithfulness_every_n_epochs)
        sets = {"fixed": self.fixed["images"], "scored": self.scored["images"] if self.scored else None,
                "faithful": self.faithful["images"] if faithful_due else None,
                "probe": self.probe.images if self.probe is not None else None}
        maps = self._cams(trainer, pl_module, {name: images for name, images in sets.items() if images is not None})
        cams, probs = maps["fixed"]
        rows = self._rows(self.fixed, cams, probs, classes)
        overlays = overlay(torch.stack([r.image for r in rows]), cams, colormap=self.colormap)
        grid = cam_grid(rows, self.colormap)
        if "scored" in maps:
            self._score(pl_module, maps["scored"][0])
        if "faithful" in maps:
            self._faithfulness(trainer, pl_module, maps["faithful"][0])
        probe_picture = self._score_probe(pl_module, *maps["probe"]) if "probe" in maps else None
        # The pictures go to the writer thread only now: encoded beside the work above, they took the
        # GIL from it, and the probe's scores, picture and logging ran 2-4x slower (bench/RESULTS.md).
        run_dir = Path(trainer.default_root_dir)
        self._submit(trainer, self._write_epoch, grid, overlays, epoch, run_dir)
        if probe_picture is not None:
            self._submit(trainer, self._write_probe, probe_picture, epoch, run_dir)

    def _score(self, pl_module, cams: torch.Tensor) -> None:
        boxes = self.scored["boxes"]
        pl_module.log("gradcam/pointing_game", float(pointing_game(cams, boxes).float().mean()))
        pl_module.log("gradcam/energy_in_box", float(energy_in_box(cams, boxes).mean()))

    def _faithfulness(self, trainer, pl_module, cams: torch.Tensor) -> None:
        # Not every epoch by default: the curves cost 32 forward passes per image, more than the
        # rest of the callback, and the areas move slowly (bench/RESULTS.md: the callback's cost).
        images = self.faithful["images"]
        steps, size = self.faithfulness_steps, images.shape[-1]
        for name, maps in (("gradcam", cams), ("gradcam/random", uniform_maps(len(images), size).to(cams.device))):
            with _as_validated(trainer):
                deletion, insertion = deletion_insertion(pl_module.net, images, maps, pl_module.device, steps=steps,
                                                         batch_size=self.batch_size)
            pl_module.log(f"{name}/deletion_auc", float(deletion.mean()))
            pl_module.log(f"{name}/insertion_auc", float(insertion.mean()))

    def _score_probe(self, pl_module, cams: torch.Tensor, probs: torch.Tensor):
        """Log the probe's scores and its references; return its grid of the first images."""
        for group, scores in (("probe", probe_scores(cams, self.probe)), *(
                (f"probe_{ref}", ref_scores) for ref, ref_scores in self.probe_references.items())):
            for key, value in scores.items():
                if value == value:  # NaN: no head boxes in the probe
                    pl_module.log(f"gradcam/{group}/{key}", value)
        return probe_grid(self.probe, cams, probs, pl_module.classes, self.num_images, self.colormap)

    def _write_probe(self, trainer, grid, epoch, run_dir: Path) -> None:
        _log_and_save(trainer, "gradcam/probe_grid", grid, epoch, run_dir / "gradcam_probe_grid.jpg")

    def _write_epoch(self, trainer, grid, overlays, epoch, run_dir: Path) -> None:
        _log_and_save(trainer, "gradcam/grid", grid, epoch, run_dir / "gradcam_grid.jpg")
        for i, picture in enumerate(overlays):
            picture = picture.permute(1, 2, 0).numpy()
            log_image(trainer, f"gradcam/sample_{i:02d}", picture, epoch, encoded=jpeg_bytes(picture))

    # -- at the end: the most confidently wrong images -----------------------------------

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.fixed is not None and self.top_losses and not trainer.interrupted:
            self._top_losses(trainer, pl_module)
        self._flush()

    def _top_losses(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        idx = dm.splits["val"]
        images = dm.load_uint8(idx)
        labels = torch.from_numpy(dm.decoded.labels[idx])
        with _as_validated(trainer):
            probs = log_probs_of(pl_module.net, images.split(self.batch_size), pl_module.device,
                                 num_classes=len(pl_module.classes)).exp()
        wrong = (probs.argmax(dim=1) != labels).nonzero().squeeze(1)
        if len(wrong) == 0:
            log.info("no validation image is misclassified: no top-losses gallery")
            return
        confidence = probs[wrong].gather(1, probs[wrong].argmax(dim=1, keepdim=True)).squeeze(1)
        worst = wrong[confidence.argsort(descending=True)[: self.top_losses]]
        sample = {"images": images[worst], "labels": labels[worst], "boxes": None}
        cams, probs_w = self._cams(trainer, pl_module, {"worst": sample["images"]})["worst"]
        gallery = cam_grid(self._rows(sample, cams, probs_w, pl_module.classes), self.colormap)
        run_dir = Path(trainer.default_root_dir)
        self._submit(trainer, self._write_gallery, gallery, trainer.current_epoch, run_dir)

    def _write_gallery(self, trainer, gallery, epoch, run_dir: Path) -> None:
        _log_and_save(trainer, "gradcam/top_losses", gallery, epoch, run_dir / "gradcam_top_losses.jpg")

    # -- the background writer -----------------------------------------------------------

    def __getstate__(self) -> dict:
        # ddp_spawn pickles the callbacks into each process: a thread pool does not pickle.
        state = self.__dict__.copy()
        state["_writer"], state["_pending"] = None, []
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradcam-writer")

    def _submit(self, trainer, fn, *args) -> None:
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._writer.submit(fn, trainer, *args))

    def _flush(self) -> None:
        for future in self._pending:
            exc = future.exception()
            if exc is not None:
                log.warning("writing Grad-CAM images failed: %s", exc)
        self._pending = []

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._flush()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._flush()


def _log_and_save(trainer: L.Trainer, tag: str, picture, epoch: int, path: Path) -> None:
    """To the loggers and to ``path`` (the latest epoch's, overwritten each time), encoded once."""
    jpeg = jpeg_bytes(picture)
    log_image(trainer, tag, picture, epoch, encoded=jpeg)
    save_picture(jpeg, path)


def _as_validated(trainer: L.Trainer):
    """The network's precision for the maps and curves: validation's, bf16 autocast under ``bf16-mixed``
    (a GPU, a CPU with native bf16), so the maps explain the predictions validation makes, in half
    the time there; the maps' scores then agree with map_report.py's fp32 ones without a bias
    (bench/RESULTS.md, session 42). Not fp16's: an unscaled fp16 gradient can underflow. (With
    ``bf16-true`` the weights themselves are bf16, and the maps follow them.)"""
    if trainer.precision == "bf16-mixed":
        return trainer.precision_plugin.forward_context()
    return nullcontext()


def _every(trainer: L.Trainer, n: int) -> bool:
    """Every ``n``-th epoch, and the last."""
    epoch = trainer.current_epoch
    return (epoch + 1) % n == 0 or epoch + 1 == trainer.max_epochs
