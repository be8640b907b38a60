"""DDP on the CPU: two processes (gloo), with conf/trainer/ddp.yaml.

In-process through train.train() with ``ddp_spawn``: the config's ``ddp`` re-runs the command
line in each rank, which under pytest would be pytest itself. Spawn pickles the trainer, its
callbacks, the module and the DataModule into each process, so this also checks that they
pickle. The config's own ``ddp`` (the GPU path) is run from the command line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from catdog.data.datamodule import CatDogDataModule

from helpers import TINY, compose_train, run_cli
from train import train

pytestmark = pytest.mark.slow  # over 15 s each on 2 CPU cores: `make test-slow` and CI run them


# A 2-minute collective timeout (Lightning's default is 30): a rank that waits on a collective
# the other rank never calls fails the test instead of hanging the suite.
STRATEGY = ("trainer.strategy={_target_:lightning.pytorch.strategies.DDPStrategy,start_method:spawn,"
            "process_group_backend:gloo,timeout:{_target_:datetime.timedelta,seconds:120}}")
DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", STRATEGY, "trainer.benchmark=false",
           "trainer.precision=32-true", "trainer.sync_batchnorm=false"]


class RecordingDataModule(CatDogDataModule):
    """The project's DataModule, noting each file scan in ``calls_log`` (one JSON line): which
    hook, which rank, whether it could build the cache, and whether it did."""

    def __init__(self, calls_log: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls_log = calls_log
        self._hook = ""

    def prepare_data(self) -> None:
        self._hook = "prepare_data"
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self._hook = "setup"
        super().setup(stage)

    def _decode(self, build: bool):
        before = set(Path(self.cache_dir).glob("*.npy"))
        decoded = super()._decode(build)
        created = set(Path(self.cache_dir).glob("*.npy")) - before
        trainer = self.trainer
        record = {"hook": self._hook, "pid": os.getpid(), "build": build, "created": len(created),
                  "global_rank": trainer.global_rank if trainer is not None else -1,
                  "local_rank": trainer.local_rank if trainer is not None else -1}
        with open(self.calls_log, "a") as f:
            f.write(json.dumps(record) + "\n")
        return decoded


def _ddp_cfg(tmp_path: Path, root: Path, *extra: str):
    calls = tmp_path / "calls.jsonl"
    cfg = compose_train(tmp_path, [f"data.root={root}", *TINY, *DDP_CPU, "test=false", "data.val_fraction=0.25",
                                   f"data._target_={__name__}.RecordingDataModule", f"+data.calls_log={calls}", *extra])
    return cfg, calls


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for events in run_dir.glob("tensorboard/events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return values


def _image_tags(run_dir: Path) -> set[str]:
    tags: set[str] = set()
    for events in run_dir.glob("tensorboard/events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        tags |= set(acc.Tags()["images"])
    return tags


def test_ddp_config_composes_for_gpus(tmp_path):
    cfg = compose_train(tmp_path, ["trainer=ddp"])
    t = cfg.trainer
    assert (t.strategy, t.accelerator, t.devices, t.num_nodes, t.precision) == ("ddp", "gpu", "auto", 1, "bf16-mixed")
    default = compose_train(tmp_path, []).trainer
    assert t._target_ == "lightning.pytorch.trainer.Trainer" and t.max_epochs == default.max_epochs  # inherited from trainer/default
    assert t.default_root_dir == str(tmp_path / "run")


def test_two_cpu_processes_train_and_build_the_cache_once(tmp_path, synthetic_root):
    cfg, calls_log = _ddp_cfg(tmp_path, synthetic_root)
    result = train(cfg)

    metrics = result["metrics"]
    for name in ("val/acc", "val/acc_best", "val/auroc", "train/acc"):
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics[name])
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    assert result["objective"] == metrics["val/acc_best"]
    assert Path(result["best_checkpoint"]).is_file()  # saved by rank 0, path handed back to this process
    assert "val/acc" in _scalars(tmp_path / "run")

    calls = [json.loads(line) for line in calls_log.read_text().splitlines()]
    assert {c["global_rank"] for c in calls} == {0, 1}, calls  # two processes really trained
    # prepare_data (the scan and the cache build) on local rank 0 only; rank 1 only loads.
    prepared = [c["local_rank"] for c in calls if c["hook"] == "prepare_data"]
    assert prepared and set(prepared) == {0}, calls  # once per trainer.fit/test, on local rank 0 only
    assert all(not c["build"] for c in calls if c["local_rank"] != 0), calls
    assert sum(c["created"] for c in calls) == 1, calls
    cache = tmp_path / "cache"
    assert len(list(cache.glob("*.npy"))) == 1 and len(list(cache.glob("*.json"))) == 1
    assert not list(cache.glob(".*tmp*")), "a cache build left temporary files"


def test_ddp_with_the_gradcam_logger(tmp_path, synthetic_root):
    cfg, _ = _ddp_cfg(tmp_path, synthetic_root)
    result = train(cfg)
    assert 0.0 <= result["metrics"]["val/acc"] <= 1.0
    run = tmp_path / "run"
    assert (run / "gradcam_grid.jpg").is_file()
    assert {"gradcam/grid", "val/confusion_matrix"} <= _image_tags(run)


def test_ddp_calibration_fits_one_temperature_on_every_ranks_validation_images(tmp_path, synthetic_root):
    """model.calibrate under DDP: each rank holds half the validation split; the temperature saved
    is the one fitted on all of it (gathered), as one process would fit it."""
    import torch
    from hydra.utils import instantiate

    from catdog.model.calibration import fit_temperature

    cfg, _ = _ddp_cfg(tmp_path, synthetic_root, "model.calibrate=true", "callbacks.gradcam=null")
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    model = instantiate(cfg.model)
    model.load_state_dict(ckpt["state_dict"])
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    batches = [data.on_after_batch_transfer(batch, 0) for batch in data.val_dataloader()]
    with torch.no_grad():
        log_p = torch.cat([model.eval().log_probs(x, temperature=1.0) for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert len(y) == 24 and ckpt["catdog"]["temperature"] == pytest.approx(fit_temperature(log_p, y), rel=1e-3)


def test_ddp_from_the_command_line(tmp_path, synthetic_root):
    """strategy=ddp as on GPUs: Lightning starts rank 1 by re-running this Hydra command line
    (with hydra.run.dir pinned to rank 0's folder), so both ranks share one run folder."""
    run = tmp_path / "run"
    cpu = [o for o in DDP_CPU if not o.startswith("trainer.strategy=")]
    proc = run_cli("train", f"data.root={synthetic_root}", f"paths.output_root={tmp_path}",
                   f"hydra.run.dir={run}", *TINY, *cpu, "data.val_fraction=0.25", "data.test_fraction=0.2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1 ran, in rank 0's folder
    assert not (tmp_path / "runs").exists()  # and made no folder of its own
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "ok"
    for name in ("val/acc", "val/acc_best", "test/acc"):
        assert 0.0 <= result["metrics"][name] <= 1.0, name
    # Only rank 0 writes TensorBoard events: one file with the HParams summary, no hp_metric.
    hparams_files = [e for e in run.glob("tensorboard/events.out.tfevents.*") if b"_hparams_/session_start_info" in e.read_bytes()]
    assert len(hparams_files) == 1
    assert "hp_metric" not in _scalars(run) and "val/acc" in _scalars(run)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
