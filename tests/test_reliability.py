"""Faults lose nothing: interrupted runs resume exactly (SIGKILL included), ``ckpt_path=last``
never continues another run than the newest, bad losses and full disks stop cleanly, checkpoints
are never half written, parallel runs build the cache once, and unwritable outputs are caught
before training starts."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import catdog.data.cache as cache_mod
from catdog.callbacks import last_checkpoint
from catdog.data.cache import decode_all
from catdog.data.files import find_labelled
from catdog.errors import DiskFullError, UserError
from catdog.model.checkpoint_load import load_checkpoint
from catdog.model.checkpoint_save import AtomicCheckpointIO
from catdog.model.resume import check_same_optimizer, check_trains_further, find_last
from catdog.preflight import check_space, check_writable
from catdog.task import read_result
from helpers import ROOT, TINY, run_cli, run_train_main

RUN = [*TINY, "trainer.max_epochs=3", "test=false", "callbacks.gradcam=null", "trainer.deterministic=true"]


def train_cli(tmp: Path, name: str, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("train", f"data.root={data}", f"paths.output_root={tmp}", f"hydra.run.dir={tmp / name}", *RUN, *extra,
                   test_modules=True)  # the test-only callbacks of killer.py


FORK_PRELOAD = ["torch", "torchvision", "lightning", "lightning.pytorch.loggers", "torch.utils.tensorboard", "hydra",
                "matplotlib.pyplot", "train", "catdog.data.datamodule", "catdog.callbacks.gradcam_logger", "killer", "helpers"]


def train_forked(tmp: Path, name: str, data: Path, *extra: str, base: list[str] = RUN) -> SimpleNamespace:
    """As train_cli, but forked from a process that has imported everything already (see
    helpers.run_train_main): seconds less per run, for the tests that start many."""
    return finish(start_forked(tmp, name, data, *extra, base=base))


def start_forked(tmp: Path, name: str, data: Path, *extra: str, base: list[str] = RUN) -> SimpleNamespace:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(FORK_PRELOAD)  # read once, when the server starts
    log = tmp / f"{name}.log"
    argv = [f"data.root={data}", f"paths.output_root={tmp}", f"hydra.run.dir={tmp / name}", *base, *extra]
    child = ctx.Process(target=run_train_main, args=(argv, str(log), str(ROOT)))
    child.start()
    return SimpleNamespace(child=child, log=log)


def finish(started: SimpleNamespace) -> SimpleNamespace:
    """The run's exit status (negative: the signal that ended it) and its output, stdout and stderr together."""
    started.child.join(300)
    output = started.log.read_text() if started.log.exists() else ""
    return SimpleNamespace(returncode=started.child.exitcode, stdout="", stderr=output)


def final_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, synthetic_root) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    proc = train_cli(tmp, "ref", synthetic_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "ref"


@pytest.fixture(scope="module")
def uninterrupted(reference_run) -> dict:
    return final_metrics(reference_run)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, exit_code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_interrupted_mid_epoch_then_resumed_matches_uninterrupted(tmp_path, synthetic_root, uninterrupted,
                                                                  signal_name, exit_code):
    killer = ["+callbacks.killer._target_=killer.SignalSelf", "+callbacks.killer.epoch=1",
              "+callbacks.killer.batch=1", f"+callbacks.killer.name={signal_name}"]
    stopped = train_cli(tmp_path, "first", synthetic_root, *killer)
    assert stopped.returncode == exit_code, stopped.stderr[-3000:]
    assert {k: read_result(tmp_path / "first")[k] for k in ("status", "exit_code")} == {"status": "interrupted",
                                                                                        "exit_code": exit_code}
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
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write to paths.output_root")
    assert last.endswith("point paths.output_root at a folder you can write to")  # not "free some space": the disk is not full
    assert "Traceback" not in proc.stderr


def test_a_network_option_that_does_not_fit_is_one_line(tmp_path, synthetic_root):
    """Hydra's instantiate wraps what SimpleCNN raises; the user still reads one line that says what to do."""
    proc = run_cli("train", f"data.root={synthetic_root}", "data.image_size=80", f"paths.output_root={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: data.image_size=80 must be a positive multiple of 32 (the product of model.net.pool=[2, 4, 4]): "
        "use 64 or 96, or model.net.pool=[2,2,2] (the original's)")
    assert "Traceback" not in proc.stderr and "Error in call to target" not in proc.stderr


def test_a_trainer_setting_lightning_refuses_is_one_line(tmp_path, synthetic_root):
    """Lightning's MisconfigurationException, wrapped by Hydra's instantiate: one line naming the key."""
    proc = run_cli("train", f"data.root={synthetic_root}", "debug=profiler_pytorch",
                   "trainer.profiler.sort_by_key=self_cpu_time", f"paths.output_root={tmp_path}", timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: trainer.profiler: Found sort_by_key: self_cpu_time. Should be within")
    assert "Traceback" not in proc.stderr and "Error in call to target" not in proc.stderr


def test_full_disk_is_reported_before_training(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=10 << 20))
    with pytest.raises(UserError, match="has 0.01 GiB free but this run needs about 1.00 GiB"):
        check_space(tmp_path, 1 << 30, "the run folder")
    check_writable(tmp_path / "new", "the run folder")  # a writable folder passes, and is created
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())


# -- ckpt_path=last: the newest run's last.ckpt, never another run's silently ------------------


def fake_run(folder: Path, started: float, job: str | None = None, last: bool = True) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"task": "train", "started": started, "job": job}))
    (folder / "checkpoints" / "epoch_000.ckpt").write_bytes(b"best")
    if last:
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"last")
    return folder


def test_last_is_the_newest_run_and_one_without_it_names_the_run_to_resume(tmp_path):
    a = fake_run(tmp_path / "runs" / "a", 1.0)
    b = fake_run(tmp_path / "runs" / "b", 2.0, last=False)  # killed before its first last.ckpt
    fake_run(tmp_path / "sweeps" / "s" / "0_x=1", 3.0, job="0_x=1")  # a sweep job: not a single run's "last"
    current = tmp_path / "runs" / "c"
    with pytest.raises(UserError) as err:
        find_last(tmp_path, current)
    message = str(err.value)
    assert "\n" not in message and f"the newest run, {b}, has no checkpoints/last.ckpt" in message
    assert message.endswith(f"to continue it, give ckpt_path={a / 'checkpoints' / 'last.ckpt'}")
    with pytest.raises(UserError) as err:  # eval, predict and cam read the checkpoint: they say "use"
        find_last(tmp_path, None, None)
    assert str(err.value).endswith(f"to use it, give ckpt_path={a / 'checkpoints' / 'last.ckpt'}")
    with pytest.raises(UserError, match="no earlier training run under .* to use; train first"):
        find_last(tmp_path / "empty")

    (b / "checkpoints" / "last.ckpt").write_bytes(b"last")
    assert find_last(tmp_path, current) == b / "checkpoints" / "last.ckpt"
    # A run requeued into its own folder (hydra.run.dir=…/$SLURM_JOB_ID) continues itself, though older.
    assert find_last(tmp_path, a) == a / "checkpoints" / "last.ckpt"
    # A run from before run.json counts, dated by its folders.
    (tmp_path / "runs" / "old" / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs" / "old" / "checkpoints" / "last.ckpt").write_bytes(b"last")
    os.utime(tmp_path / "runs" / "old" / "checkpoints", (10.0, 10.0))
    assert find_last(tmp_path, current) == tmp_path / "runs" / "old" / "checkpoints" / "last.ckpt"


def test_last_passes_over_a_run_that_failed_before_its_first_save(tmp_path):
    """A wrong setting or unreadable data stops a run with result.json "failed" and nothing trained:
    `last` still means the run before it; a run killed before its first save (no result) still stops it."""
    a = fake_run(tmp_path / "runs" / "a", 1.0)
    failed = fake_run(tmp_path / "runs" / "b", 2.0, last=False)
    (failed / "result.json").write_text(json.dumps({"status": "failed", "error": "no images found"}))
    assert find_last(tmp_path, tmp_path / "runs" / "c") == a / "checkpoints" / "last.ckpt"
    killed = fake_run(tmp_path / "runs" / "d", 3.0, last=False)
    with pytest.raises(UserError, match=f"the newest run, {re.escape(str(killed))}, has no checkpoints/last.ckpt"):
        find_last(tmp_path, tmp_path / "runs" / "c")


def test_resuming_a_run_that_reached_max_epochs_is_refused(tmp_path):
    finished = {"epoch": 1, "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 2, "completed": 1}}}}}
    with pytest.raises(UserError, match="has already trained 2 epochs, trainer.max_epochs=2: raise trainer.max_epochs"):
        check_trains_further("last.ckpt", finished, 2)
    check_trains_further("last.ckpt", finished, 3)  # longer: trains on
    interrupted = {"epoch": 1, "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 1}}}}}
    check_trains_further("last.ckpt", interrupted, 2)  # stopped inside its last epoch: finishes it
    with pytest.raises(UserError):
        check_trains_further("student.ckpt", {"epoch": 4}, 5)  # no loop state: counted from the epoch


def test_resuming_with_another_optimizer_is_refused_in_one_line(tmp_path):
    saved = {"catdog": {"config": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3}}}}
    sgd = OmegaConf.create({"optimizer": {"_target_": "torch.optim.SGD", "lr": 1e-2}})
    with pytest.raises(UserError, match="trained with torch.optim.AdamW, this run asks for torch.optim.SGD: .* drop the optimizer"):
        check_same_optimizer("last.ckpt", saved, sgd)
    check_same_optimizer("last.ckpt", saved, OmegaConf.create({"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-4}}))
    check_same_optimizer("student.pth", {"state_dict": {}}, sgd)  # a file that names no optimizer: nothing to compare


def test_last_in_a_sweep_is_the_same_job_of_the_newest_earlier_sweep(tmp_path):
    first = fake_run(tmp_path / "s1" / "0_lr=1", 1.0, job="0_lr=1")
    fake_run(tmp_path / "s1" / "1_lr=2", 2.0, job="1_lr=2")
    killed = fake_run(tmp_path / "s2" / "0_lr=1", 3.0, job="0_lr=1", last=False)
    second = fake_run(tmp_path / "s2" / "1_lr=2", 4.0, job="1_lr=2")
    fake_run(tmp_path / "single", 5.0)
    assert find_last(tmp_path, tmp_path / "s3" / "1_lr=2", "1_lr=2") == second / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError) as err:
        find_last(tmp_path, tmp_path / "s3" / "0_lr=1", "0_lr=1")
    assert f"the newest earlier run of this job, {killed}, has no checkpoints/last.ckpt" in str(err.value)
    assert str(err.value).endswith(f"the newest run of this job that has one is {first}: to continue it, "
                                   f"give ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    with pytest.raises(UserError, match="no earlier sweep under .* has a job named 2_lr=3 to continue"):
        find_last(tmp_path, tmp_path / "s3" / "2_lr=3", "2_lr=3")


def test_after_a_sigkilled_run_last_names_the_run_to_resume_which_logs_what_changed(tmp_path, synthetic_root):
    # The steps: run A finishes; run B, with another lr, is killed before any last.ckpt.
    a = train_forked(tmp_path, "a", synthetic_root, "trainer.max_epochs=1", "optimizer.lr=0.001")
    assert a.returncode == 0, a.stderr[-3000:]
    b = train_forked(tmp_path, "b", synthetic_root, "optimizer.lr=0.01", *kill_at("train", 1))
    assert b.returncode == -signal.SIGKILL and not (tmp_path / "b" / "checkpoints" / "last.ckpt").exists()
    with pytest.raises(UserError) as err:  # what `ckpt_path=last` now says, in one line
        find_last(tmp_path, tmp_path / "c")
    assert f"the newest run, {tmp_path / 'b'}, has no checkpoints/last.ckpt" in str(err.value)
    override = str(err.value).rsplit("give ", 1)[1]
    assert override == f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}"

    c = train_forked(tmp_path, "c", synthetic_root, override, "trainer.max_epochs=2", "optimizer.lr=0.01")
    assert c.returncode == 0, c.stderr[-3000:]
    log = c.stdout + c.stderr
    steps = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["global_step"]
    assert (f"continuing run {tmp_path / 'a'} from last.ckpt (saved after 1 epoch, step {steps}); settings changed from "
            "the checkpoint's: optimizer.lr 0.001 -> 0.01, trainer.max_epochs 1 -> 2\n") in log


# -- SIGKILL: at most every_minutes or one epoch lost; resumed to the same weights ------------------


@pytest.mark.parametrize("every_min, epoch_min", [(10, 0.1), (10, 4), (10, 25), (0, 0.1)])
def test_last_checkpoint_is_saved_often_enough_to_lose_at_most_every_minutes_or_one_epoch(tmp_path, monkeypatch,
                                                                                        every_min, epoch_min):
    clock = [0.0]
    monkeypatch.setattr(last_checkpoint.time, "monotonic", lambda: clock[0])
    callback = last_checkpoint.LastCheckpoint(str(tmp_path), every_minutes=every_min)
    saves = []
    trainer = SimpleNamespace(max_epochs=None, fast_dev_run=False, current_epoch=0, global_step=0, should_stop=False,
                              save_checkpoint=lambda *args, **kwargs: saves.append(clock[0]))
    while clock[0] < 5 * 3600:
        clock[0] += epoch_min * 60
        callback.on_train_epoch_end(trainer, None)
    gaps = np.diff([0.0, *saves])
    bound, epoch_s = max(every_min, epoch_min) * 60, epoch_min * 60
    assert gaps.max() <= bound + 1e-6  # what a SIGKILL just before a save loses
    assert gaps.min() >= (bound - epoch_s if epoch_s < bound else epoch_s) - 1e-6  # and no more saves than that needs


def kill_at(phase: str, k: int = 1, seconds: float = 0.0) -> list[str]:
    return ["+callbacks.kill._target_=killer.KillAt", f"+callbacks.kill.phase={phase}", f"+callbacks.kill.k={k}",
            f"+callbacks.kill.seconds={seconds}"]


# Eleven kills: two during the cache build (before and after decoding), then at random batches of
# training and validation, partway through random checkpoint and Grad-CAM writes, and one at a
# random time (which may come after the run's end).
KILLS = ["cache", "cache", "train", "val", "save", "gradcam", "train", "val", "save", "gradcam", "timer"]
EVENTS_PER_EPOCH = {"train": 4, "val": 2, "save": 1, "gradcam": 1}  # at least this many in each epoch left
WITH_GRADCAM = [a for a in RUN if a != "callbacks.gradcam=null"] + [
    "callbacks.gradcam.num_images=2", "callbacks.gradcam.score_images=0", "callbacks.gradcam.top_losses=2",
    "callbacks.last_checkpoint.every_minutes=0"]


def epochs_done(run: Path) -> int:
    last = run / "checkpoints" / "last.ckpt"
    return load_checkpoint(last)["epoch"] + 1 if last.is_file() else 0


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_with_the_uninterrupted_weights(tmp_path, synthetic_root, reference_run):
    seed = int(os.environ.get("CATDOG_KILL_SEED", random.randrange(1 << 30)))
    rng, runs, kills = random.Random(seed), [], 0
    for i, phase in enumerate([*KILLS, None]):  # None: the last run, not killed
        done = epochs_done(runs[-1]) if runs else 0
        if runs and done == 0:  # killed before its first last.ckpt: `last` refuses, naming no other run silently
            with pytest.raises(UserError, match=f"the newest run, {re.escape(str(runs[-1]))}, has no"):
                find_last(tmp_path, tmp_path / f"run{i}")
        resume = ["ckpt_path=last"] if 0 < done < 3 else []  # else start again (or the run had finished)
        left = 3 - (done if resume else 0)
        if phase is None:
            fault = []
        elif phase == "cache":
            fault = kill_at("cache", k=i + 1)
        elif phase == "timer":
            fault = kill_at("timer", seconds=round(rng.uniform(0.3, 2.5), 2))
        else:
            fault = kill_at(phase, k=rng.randint(1, left * EVENTS_PER_EPOCH[phase]))
        proc = train_forked(tmp_path, f"run{i}", synthetic_root, *resume, *fault, base=WITH_GRADCAM)
        context = f"seed {seed}, run {i}: {fault} {resume}\n{proc.stderr[-3000:]}"
        if resume:
            assert f"continuing run {runs[-1]} from last.ckpt" in proc.stdout + proc.stderr, context
        runs.append(tmp_path / f"run{i}")
        if phase in (None, "timer"):
            assert proc.returncode in (0, -signal.SIGKILL), context  # a timer may come after the run's end
        else:
            assert proc.returncode == -signal.SIGKILL, context
        kills += proc.returncode == -signal.SIGKILL
    assert kills >= 10 and proc.returncode == 0, f"seed {seed}: {kills} kills"
    assert epochs_done(runs[-1]) == 3

    # The chain of resumed runs ends with the weights of one run never interrupted.
    final, reference = (load_checkpoint(r / "checkpoints" / "last.ckpt")["state_dict"] for r in (runs[-1], reference_run))
    assert final.keys() == reference.keys()
    for name in reference:
        assert torch.equal(final[name], reference[name]), f"seed {seed}: {name}"
    # Nothing left that loads by mistake: every file under a checkpoint's name is whole, the cache
    # record loads as it is (no rebuild), and no temporary array of a killed build is left.
    for ckpt in tmp_path.glob("**/*.ckpt"):
        load_checkpoint(ckpt)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache_mod, "_decode_all", lambda *a, **k: pytest.fail("the cache was not reused"))
        assert decode_all(find_labelled(synthetic_root), 32, tmp_path / "cache").images is not None
    assert not [p.name for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name]


# -- a disk that fills during training; two runs on one cache -----------------------------------


def test_disk_filling_during_training_stops_with_one_line_and_keeps_last_checkpoint(tmp_path, synthetic_root):
    full = ["+callbacks.full._target_=killer.FullDisk", "+callbacks.full.after=1", "callbacks.last_checkpoint.every_minutes=0"]
    proc = train_forked(tmp_path, "run", synthetic_root, *full)
    assert proc.returncode == DiskFullError.exit_code == 28, proc.stderr[-3000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"the disk is full: saving {last} (epoch 1, step 8) failed" in errors[0], proc.stderr[-3000:]
    assert errors[0].endswith(f"resume with ckpt_path={last}") and "Traceback" not in proc.stderr
    assert load_checkpoint(last)["epoch"] == 0  # the previous one, whole
    assert not [p.name for p in last.parent.iterdir() if ".tmp-" in p.name]  # the partial file is gone


def test_two_runs_started_together_build_the_cache_once_and_both_train(tmp_path, synthetic_root):
    slow = ["+callbacks.slow._target_=killer.SlowCacheBuild", "+callbacks.slow.seconds=5", "trainer.max_epochs=1"]
    runs = [finish(started) for started in [start_forked(tmp_path, f"run{i}", synthetic_root, *slow) for i in range(2)]]
    logs = [run.stderr for run in runs]
    assert [run.returncode for run in runs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert sorted("TEST: building the cache" in log for log in logs) == [False, True]
    assert sorted("another run is building the decoded-image cache" in log for log in logs) == [False, True]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert all(json.loads((tmp_path / f"run{i}" / "result.json").read_text())["status"] == "ok" for i in range(2))


def test_a_second_ctrl_c_stops_at_once_with_ctrl_cs_exit_code_and_saves_nothing(tmp_path):
    """Lightning would turn a KeyboardInterrupt into exit 1 and its own message; the second press exits
    130, as Ctrl-C does, and the half-done step is not saved over the last good checkpoint."""
    callback = last_checkpoint.LastCheckpoint(str(tmp_path))
    callback._on_ctrl_c(signal.SIGINT, None)  # the first: an orderly stop before the next batch
    assert callback._stop_requested
    with pytest.raises(SystemExit) as stop:
        callback._on_ctrl_c(signal.SIGINT, None)
    assert stop.value.code == 130
    callback.on_exception(SimpleNamespace(sanity_checking=False), None, stop.value)
    assert not (tmp_path / "last.ckpt").exists()
