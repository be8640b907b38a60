"""Host time per training step: how much Python work surrounds each step of ours.

At a tiny image size (8 px by default) the network's own arithmetic is next to nothing, so the
time per step is the host's: Python, Lightning's hooks, our callbacks and logging, and the
launch of every operation. On a GPU that host time decides whether the GPU waits: at 20,000
images/s a step of 64 images has 3.2 ms. Three loops, with the network and optimizer that
conf/ composes (with the overrides given), and the precision and compile setting of the
trainer preset this machine gets:

  bare       forward, loss, backward, optimizer step on one batch already on the device
  lightning  a minimal LightningModule (the same step) in a Trainer with no logger or callbacks
  ours       src/train.py's train() in this process, on a small built-in data set

and three of ours' parts on their own, per batch: the per-step seeding (torch.manual_seed, and
ours that seeds only the generators in use), the training augmentation (eager, and compiled as
the GPU preset runs it) and the optimizer step (Adam's for-loop, foreach and fused forms).

    python bench/host_overhead.py                     # CPU: about 2 minutes
    python bench/host_overhead.py -- callbacks.gradcam=null   # ours, with an override
    python bench/host_overhead.py --size 224 --skip bare lightning ours   # the parts at full size

Prints ms/step for each and writes bench/out/host_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from catdog.allocator import apply_keep_freed_memory  # noqa: E402
from catdog.data.synthetic import generate  # noqa: E402
from catdog.model.simple_cnn import SimpleCNN  # noqa: E402
from throughput import (Ceiling, autocast_dtype, build_net, compose_config, read_scalars, resident_batch,  # noqa: E402
                        steady_rate, sync_device)


def bare(cfg: DictConfig, size: int, batch: int, steps: int, device, precision: str, compile_model: bool) -> float:
    ceiling = Ceiling(cfg, size, batch, device, precision, (compile_model,), warmup=10)
    ceiling.time(steps, seconds=0, min_repeats=1)  # one timing of `steps` steps
    return 1000 * batch / ceiling.result()["images_per_s"]


class _Minimal(L.LightningModule):
    def __init__(self, net, optimizer):
        super().__init__()
        self.net, self.optimizer = net, optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return self.optimizer(params=self.parameters())


class _Batches:
    """Batches already on the device (a plain list would be taken for a list of loaders)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class _StepClock(L.Callback):
    """Wall time of each epoch's batches after the first ten, synchronised with the device."""

    def __init__(self) -> None:
        self.ms_per_step: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 10:
            sync_device(pl_module.device)
            self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        sync_device(pl_module.device)
        self.ms_per_step.append(1000 * (time.perf_counter() - self._start) / (trainer.num_training_batches - 10))


def minimal_lightning(cfg: DictConfig, size: int, batch: int, steps: int, device, precision: str, compile_model: bool) -> float:
    batches = _Batches([resident_batch(size, batch, device) for _ in range(steps + 10)])
    clock = _StepClock()
    trainer = L.Trainer(accelerator=device.type, devices=1, precision=precision, max_epochs=2, logger=False,
                        callbacks=[clock], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(_Minimal(build_net(cfg, size, compile_model, device), instantiate(cfg.optimizer)), train_dataloaders=batches)
    return clock.ms_per_step[-1]


def ours(size: int, batch: int, images: int, epochs: int, overrides: list[str]) -> float:
    """train() as src/train.py runs it; ms/step from its own perf/train_images_per_s."""
    from train import train

    work = Path(tempfile.mkdtemp(prefix="host-overhead-"))
    root = generate(ROOT / "bench" / "out" / f"synthetic-{images}", n_per_class=images // 2, size=32)
    cfg = compose_config([
        f"data.root={root}", f"data.image_size={size}", f"data.batch_size={batch}", "data.val_fraction=0.05",
        f"trainer.max_epochs={epochs}", f"paths.output_root={work}", f"data.cache_dir={work}/cache",
        "trainer.enable_progress_bar=false", "test=false", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(work / "run")
    train(cfg)
    rates = read_scalars(work / "run", ("perf/train_images_per_s",))["perf/train_images_per_s"]
    shutil.rmtree(work)
    return 1000 * batch / steady_rate(rates)


def _ms(fn, repeats: int, device: torch.device) -> float:
    for _ in range(3):  # warm-up (and compilation)
        fn()
    sync_device(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync_device(device)
    return 1000 * (time.perf_counter() - start) / repeats


def seed_parts(steps: int, device) -> dict[str, float]:
    from catdog.model.classifier import _seed_generators

    return {"torch.manual_seed": _ms(lambda: torch.manual_seed(1), steps, device),
            "ours": _ms(lambda: _seed_generators(1, device), steps, device)}


def augment_parts(cfg: DictConfig, size: int, batch: int, steps: int, device, precision: str) -> dict[str, float]:
    """The training augmentation of one batch as ours runs it (conf/'s ``model.augment``, under the
    preset's autocast, then the copy to the network's channels-last layout), eager and compiled."""
    from catdog.data.augment import DeviceAugment

    augment = DeviceAugment(**OmegaConf.to_container(cfg.model.augment))
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)  # as the cache gives them
    dtype = autocast_dtype(precision)
    compiled = torch.compile(augment.__call__, dynamic=False)

    def timed(fn) -> float:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return _ms(lambda: fn(images).contiguous(memory_format=torch.channels_last), steps, device)

    return {"eager": timed(augment), "compiled": timed(compiled)}


def optimizer_parts(size: int, steps: int, device) -> dict[str, float]:
    """One Adam step over SimpleCNN's parameters (fc1 grows with the image size)."""
    net = SimpleCNN(image_size=size).to(device)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    forms = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
    return {name: _ms(torch.optim.Adam(net.parameters(), 1e-3, **kw).step, steps, device) for name, kw in forms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200, help="timed steps of the bare and minimal loops")
    parser.add_argument("--images", type=int, default=4000, help="built-in images for ours (95%% train)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of ours; the first is not counted")
    parser.add_argument("--skip", nargs="*", default=[], choices=["bare", "lightning", "ours", "seed", "augment", "optimizer"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "host_overhead.json")
    parser.add_argument("overrides", nargs="*", help="overrides for ours, e.g. callbacks.gradcam=null")
    args = parser.parse_args()
    # The original's 2x2 pools, which fit 8 px (the default's 2, 4, 4 need 32), first so that given ones win.
    args.overrides = ["model.net.pool=[2,2,2]", *args.overrides]

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = compose_config(args.overrides)  # precision and compile as train.py would resolve them, presets included
    apply_keep_freed_memory(cfg.get("keep_freed_memory"))  # every loop with the heap train.py gives ours (catdog/allocator.py)
    precision, compile_model = str(cfg.trainer.precision), bool(cfg.model.compile)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "size": args.size,
              "batch": args.batch, "precision": precision, "compile": compile_model, "overrides": args.overrides}
    loops = {"bare": lambda: bare(cfg, args.size, args.batch, args.steps, device, precision, compile_model),
             "lightning": lambda: minimal_lightning(cfg, args.size, args.batch, args.steps, device, precision, compile_model),
             "ours": lambda: ours(args.size, args.batch, args.images, args.epochs, args.overrides)}
    for name, run in loops.items():
        if name not in args.skip:
            result[f"{name}_ms_per_step"] = run()
            print(f"{name}: {result[f'{name}_ms_per_step']:.2f} ms/step", flush=True)
    parts = {"seed": lambda: seed_parts(args.steps, device),
             "augment": lambda: augment_parts(cfg, args.size, args.batch, max(5, args.steps // 10), device, precision),
             "optimizer": lambda: optimizer_parts(args.size, max(5, args.steps // 10), device)}
    for name, run in parts.items():
        if name not in args.skip:
            result[f"{name}_ms"] = run()
            print(f"{name}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in result[f"{name}_ms"].items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
