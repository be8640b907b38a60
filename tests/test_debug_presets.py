"""The debug=... presets (conf/debug/): each composes as a whole-config preset and does its job."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from catdog.errors import UserError
from catdog.model.resume import find_last
from catdog.resolvers import CONF_DIR
from helpers import TINY, compose_train
from train import train

PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "debug").glob("*.yaml"))


def test_presets_are_global_and_set_what_a_debug_run_needs(tmp_path):
    assert {"default", "overfit", "limit", "profiler", "profiler_pytorch", "anomaly"} <= set(PRESETS)
    for name in PRESETS:
        lines = (Path(CONF_DIR) / "debug" / f"{name}.yaml").read_text().splitlines()
        assert lines[0] == "# @package _global_" and lines[1].startswith("# (A preset for several groups"), name
        cfg = compose_train(tmp_path, [f"debug={name}"])
        assert cfg.data.num_workers == 0 and cfg.model.compile is False and cfg.trainer.precision == "32-true", name
    assert compose_train(tmp_path, ["debug=anomaly"]).trainer.detect_anomaly is True
    assert compose_train(tmp_path, ["debug=limit"]).trainer.limit_train_batches == 4


def test_default_runs_one_batch_of_each_and_leaves_nothing_to_resume(tmp_path, synthetic_root):
    result = train(compose_train(tmp_path, [f"data.root={synthetic_root}", "debug=default", *TINY, "data.test_fraction=0.2"]))
    assert "val/acc" in result["metrics"] and "test/acc" in result["metrics"]
    # A smoke test's one batch is no model: no last.ckpt, and the folder is not marked, so `last` passes it by.
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "run" / "run.json").exists()
    with pytest.raises(UserError, match="no earlier training run under"):
        find_last(tmp_path)


def test_overfit_one_batch_reaches_full_training_accuracy(tmp_path, synthetic_root):
    cfg = compose_train(tmp_path, [f"data.root={synthetic_root}", "debug=overfit", *TINY, "trainer.max_epochs=200",
                                   "callbacks.gradcam=null"])
    assert cfg.trainer.overfit_batches == 1 and cfg.model.net.dropout == 0 and cfg.model.augment.scale == [1.0, 1.0]
    assert cfg.model.augment.frame_swap == 0
    result = train(cfg)
    assert result["metrics"]["train/acc"] == 1.0
    stopped_at = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert stopped_at < 200  # it stopped on reaching 1.0, not at max_epochs


@pytest.mark.parametrize("preset, files", [
    ("limit", ["checkpoints/last.ckpt"]),
    ("profiler", ["fit-profile.txt"]),
    ("profiler_pytorch", ["fit-profile.txt", "*.pt.trace.json"]),
    ("anomaly", ["checkpoints/last.ckpt"]),
])
def test_preset_runs_and_leaves_its_output_in_the_run_folder(tmp_path, synthetic_root, preset, files):
    cfg = compose_train(tmp_path, [f"data.root={synthetic_root}", f"debug={preset}", *TINY, "callbacks.gradcam=null",
                                   "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false"])
    train(cfg)
    for pattern in files:
        assert list((tmp_path / "run").glob(pattern)), f"{preset}: no {pattern} in the run folder"
