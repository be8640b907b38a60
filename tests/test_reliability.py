"""Faults lose nothing: interrupted runs resume exactly, bad losses stop cleanly, checkpoints
are never half written, and unwritable outputs are caught before training starts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from catdog.errors import UserError
from catdog.model.checkpoint_load import load_checkpoint
from catdog.model.checkpoint_save import AtomicCheckpointIO
from catdog.preflight import check_space, check_writable
from helpers import TINY, run_cli

RUN = [*TINY, "trainer.max_epochs=3", "test=false", "callbacks.gradcam=null", "trainer.deterministic=true"]


def train_cli(tmp: Path, name: str, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("train", f"data.root={data}", f"paths.output_root={tmp}", f"hydra.run.dir={tmp / name}", *RUN, *extra,
                   test_modules=True)  # the test-only callbacks of killer.py


def final_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, synthetic_root) -> dict:
    tmp = tmp_path_factory.mktemp("reference")
    proc = train_cli(tmp, "ref", synthetic_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return final_metrics(tmp / "ref")


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, exit_code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_interrupted_mid_epoch_then_resumed_matches_uninterrupted(tmp_path, synthetic_root, uninterrupted,
                                                                  signal_name, exit_code):
    killer = ["+callbacks.killer._target_=killer.SignalSelf", "+callbacks.killer.epoch=1",
              "+callbacks.killer.batch=1", f"+callbacks.killer.name={signal_name}"]
    stopped = train_cli(tmp_path, "first", synthetic_root, *killer)
    assert stopped.returncode == exit_code, stopped.stderr[-3000:]
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 2

    resumed = train_cli(tmp_path, "second", synthetic_root, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = final_metrics(tmp_path / "second")
    for name in ("val/acc", "val/loss", "val/acc_best", "train/loss", "train/acc"):
        assert metrics[name] == pytest.approx(uninterrupted[name], abs=1e-6), name


def test_non_finite_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path, synthetic_root):
    poison = ["+callbacks.poison._target_=killer.PoisonWeights", "+callbacks.poison.epoch=1", "+callbacks.poison.batch=2",
              "callbacks.last_checkpoint.every_minutes=0"]  # last.ckpt after every epoch
    proc = train_cli(tmp_path, "run", synthetic_root, *poison)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nan or inf at epoch 1, step 6" in errors[0] and "Traceback" not in proc.stderr
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 0  # the end of the last good epoch, not the poisoned one
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_checkpoint_save_crash_leaves_previous_file_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, path)

    real_save = torch.save

    def crash_halfway(obj, f, *args, **kwargs):
        real_save({"state_dict": {"w": torch.zeros(10)}}, f)
        raise OSError("disk went away")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(OSError):
        io.save_checkpoint({"state_dict": {"w": torch.full((1000,), 2.0)}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_unwritable_output_root_is_one_line_before_any_work(tmp_path, synthetic_root):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run_cli("train", f"data.root={synthetic_root}", f"paths.output_root={blocker / 'outputs'}", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot write to paths.output_root")
    assert "Traceback" not in proc.stderr


def test_full_disk_is_reported_before_training(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=10 << 20))
    with pytest.raises(UserError, match="has 0.01 GiB free but this run needs about 1.00 GiB"):
        check_space(tmp_path, 1 << 30, "the run folder")
    check_writable(tmp_path / "new", "the run folder")  # a writable folder passes, and is created
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())
