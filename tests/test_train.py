"""Training end to end: through Hydra's compose API, the real command line, sweeps and resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from catdog.errors import UserError
from catdog.preflight import check_accelerator
from helpers import ROOT, TINY, compose_train, run_cli, write_image
from train import tensorboard_logdir, train



def scalar_tags(run_dir: Path) -> set[str]:
    tags = set()
    for events in run_dir.glob("**/events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def test_training_run_through_compose(tmp_path, synthetic_root):
    cfg = compose_train(tmp_path, [f"data.root={synthetic_root}", *TINY, "trainer.max_epochs=2", "data.test_fraction=0.2"])
    result = train(cfg)
    metrics = result["metrics"]
    for name in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "val/f1", "val/auroc", "test/acc", "test/auroc"):
        assert name in metrics, name
    assert result["objective"] == metrics["val/acc_best"]
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert Path(result["best_checkpoint"]).is_file() and "epoch_" in result["best_checkpoint"]
    assert {"train/loss", "train/loss_step", "train/acc", "val/acc", "val/acc_best", "train/lr"} <= scalar_tags(run)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # plain data only
    assert ckpt["catdog"]["classes"] == ["cat", "dog"]
    assert ckpt["catdog"]["net"]["image_size"] == 32


def test_the_tensorboard_hint_points_at_a_folder_that_shows_the_run(tmp_path):
    root = tmp_path / "outputs"
    assert tensorboard_logdir(str(root / "2026-12-05" / "07-40-45"), str(root)) == str(root)  # beside the other runs
    assert tensorboard_logdir(str(tmp_path / "elsewhere"), str(root)) == str(tmp_path / "elsewhere")  # hydra.run.dir=…


def test_resume_continues_from_the_checkpoint(tmp_path, synthetic_root):
    first = compose_train(tmp_path / "a", [f"data.root={synthetic_root}", *TINY, "test=false"])
    train(first)
    last = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    steps_one_epoch = torch.load(last, weights_only=True)["global_step"]
    assert steps_one_epoch > 0
    second = compose_train(tmp_path / "a", [f"data.root={synthetic_root}", *TINY, "test=false",
                                            "trainer.max_epochs=2", "ckpt_path=last"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(second.paths, "output_dir", str(tmp_path / "b"))
        train(second)
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * steps_one_epoch
    # Resumed again at the same length: refused before the new run marks its folder, so `last` still means "b".
    again = compose_train(tmp_path / "a", [f"data.root={synthetic_root}", *TINY, "test=false", "trainer.max_epochs=2",
                                           f"ckpt_path={tmp_path / 'b' / 'checkpoints' / 'last.ckpt'}"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(again.paths, "output_dir", str(tmp_path / "c"))
        with pytest.raises(UserError, match="has already trained 2 epochs, trainer.max_epochs=2"):
            train(again)
    assert not (tmp_path / "c").exists()
    # The default one-cycle schedule was stretched to the longer run, not kept at the saved length.
    assert resumed["lr_schedulers"][0]["total_steps"] >= 2 * steps_one_epoch
    # The best epoch's checkpoint holds the weights only: refused in one line naming the file that resumes.
    (best,) = (tmp_path / "b" / "checkpoints").glob("epoch_*.ckpt")
    weights_only = compose_train(tmp_path / "a", [f"data.root={synthetic_root}", *TINY, "test=false",
                                                  "trainer.max_epochs=3", f"ckpt_path={best}"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(weights_only.paths, "output_dir", str(tmp_path / "d"))
        with pytest.raises(UserError, match=f"holds the weights only, .*: resume from ckpt_path={tmp_path / 'b' / 'checkpoints' / 'last.ckpt'}"):
            train(weights_only)
    assert not (tmp_path / "d").exists()


def test_resuming_a_network_of_another_shape_names_the_settings_that_continue_it(tmp_path, synthetic_root):
    """A run of the default pools continued after they changed (as experiment=cpu's did): one line
    that names the overrides bringing the checkpoint's network back, before the new run marks its
    folder, so `last` still means the run to continue; with those overrides it continues."""
    from catdog.errors import UserError

    train(compose_train(tmp_path / "a", [f"data.root={synthetic_root}", *TINY, "test=false"]))
    common = [f"data.root={synthetic_root}", *TINY, "test=false", "trainer.max_epochs=2", "ckpt_path=last"]
    changed = compose_train(tmp_path / "a", [*common, "model.net.pool=[2,2,2]", "data.image_size=64"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(changed.paths, "output_dir", str(tmp_path / "b"))
        with pytest.raises(UserError) as caught:
            train(changed)
    message = str(caught.value)
    assert "net.fc1.weight" in message and "add 'data.image_size=32' 'model.net.pool=[2,4,4]' to continue it" in message
    assert not (tmp_path / "b" / "run.json").exists()
    hint = message.split("add ")[1].split(" to continue")[0].replace("'", "").split()
    again = compose_train(tmp_path / "a", [*common, "model.net.pool=[2,2,2]", "data.image_size=64", *hint])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(again.paths, "output_dir", str(tmp_path / "c"))
        train(again)
    assert torch.load(tmp_path / "c" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_a_checkpoint_from_before_the_pools_setting_is_named_with_the_original_pools(tmp_path):
    """Checkpoints saved before model.net.pool existed (session 25) were trained with the original
    pools: the hint names those, not "(unset)"."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from catdog.errors import UserError
    from catdog.model.resume import check_same_network
    from catdog.model.simple_cnn import SimpleCNN

    cfg = compose_train(tmp_path, ["data.root=/x", "data.image_size=32"])
    old = OmegaConf.to_container(cfg, resolve=True)
    del old["model"]["net"]["pool"]
    ckpt = {"state_dict": {f"net.{k}": v for k, v in SimpleCNN(image_size=32, batch_norm=True).state_dict().items()},
            "catdog": {"config": old}}
    with pytest.raises(UserError, match=r"add 'model.net.pool=\[2,2,2\]' to continue it"):
        check_same_network("old.ckpt", ckpt, instantiate(cfg.model), cfg)


def test_the_literal_command_on_a_fresh_clone_says_where_the_photos_go_before_anything_else(tmp_path):
    """`python src/train.py trainer.max_epochs=40`, as the user types it, where Kaggle's photos are
    not unzipped yet: one line, nothing printed before it (run from an empty folder)."""
    proc = run_cli("train", "trainer.max_epochs=40", f"paths.output_root={tmp_path / 'outputs'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == "" and proc.stderr.splitlines() == [
        "error: no training photos at data.root=data/dogs-vs-cats/train: download train.zip from Kaggle's Dogs vs. Cats "
        "competition and unzip it so that data/dogs-vs-cats/train/cat.0.jpg exists, or add data.root=/path/to/train "
        "(`make demo` trains on the built-in data instead)"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["data.root=null"], "data.root is not set"),
        (["data.root=/no/such/folder"], "does not exist"),
        (["ckpt_path=/no/such.ckpt", "data.root=."], "does not exist"),
        # experiment=cpu validates every 5 epochs: a shorter run would end unvalidated, with no best checkpoint
        (["experiment=cpu", "data.root=.", "trainer.max_epochs=7"], "max_epochs=7 is not a multiple of trainer.check_val"),
        (["keep_freed_memory=sometimes", "data.root=."], "keep_freed_memory=sometimes: use never"),
        (["trainer.max_epochs=2.5", "data.root=."], "trainer.max_epochs=2.5 is not a whole number of epochs"),
        (["model.surroundings_penalty=-1", "data.root=."], "must be 0 (off) or a positive weight"),
        (["model.surroundings_penalty=0.3", "model.augment.frame_swap=0", "data.root=."],
         "set model.surroundings_penalty=0 or model.augment.frame_swap > 0"),
    ],
    ids=["no-root", "missing-root", "missing-checkpoint", "last-epoch-unvalidated", "unknown-heap-setting", "epochs-not-a-number",
         "negative-penalty", "penalty-without-swap"],
)
def test_user_errors_exit_with_one_line(tmp_path, args, message):
    proc = run_cli("train", *args, f"paths.output_root={tmp_path}", "~logger")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in proc.stderr


def test_a_gpu_trainer_without_a_gpu_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="trainer.accelerator=gpu but no CUDA GPU is visible here: use trainer=cpu"):
        check_accelerator("gpu")
    check_accelerator("auto")  # takes what there is
    check_accelerator("cpu")


def test_a_mistyped_override_is_one_line_with_the_key_meant(tmp_path):
    proc = run_cli("train", "data.rooot=/x", f"paths.output_root={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: data.rooot is not a setting; did you mean data.root?"]
    assert not any(tmp_path.iterdir())  # nothing was started


def test_a_word_for_a_switch_is_refused_in_one_line_before_any_work(tmp_path, synthetic_root):
    proc = run_cli("train", f"data.root={synthetic_root}", f"paths.output_root={tmp_path}", "test=no",
                   "logger=[tensorboard,csv]")  # a list of a group's options is a choice, not a value to check
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: test=no: test takes true or false, like its default, true"
    (run,) = (tmp_path / "runs").iterdir()
    assert not (run / "run.json").exists() and not (run / "checkpoints").exists()  # refused before any work


def test_hydras_full_report_stays_available(tmp_path):
    proc = run_cli("train", "data.rooot=/x", f"paths.output_root={tmp_path}", env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1 and "ConfigCompositionException" in proc.stderr


@pytest.mark.slow
def test_two_job_multirun_from_the_command_line(tmp_path, synthetic_root):
    sweep = tmp_path / "sweep"
    proc = run_cli("train", "-m", f"data.root={synthetic_root}", f"paths.output_root={tmp_path}", f"hydra.sweep.dir={sweep}",
                   *TINY, "test=false", "optimizer.lr=0.001,0.0001")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    # Named by job number and overrides (data.root and paths left out), so TensorBoard lists them readably.
    assert len(jobs) == 2 and jobs[0].name.startswith("0_") and jobs[1].name.startswith("1_")
    assert "optimizer.lr=0.001," in jobs[0].name and "optimizer.lr=0.0001," in jobs[1].name
    assert "data.root" not in jobs[0].name and "/" not in jobs[0].name
    for job in jobs:
        assert "val/acc" in scalar_tags(job)
        assert json.loads((job / "result.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_two_runs_started_together_get_two_folders(tmp_path, synthetic_root):
    # Both stop at once (no such checkpoint) but only after Hydra made their run folders.
    args = [sys.executable, str(ROOT / "src" / "train.py"), f"data.root={synthetic_root}", f"paths.output_root={tmp_path}",
            "ckpt_path=/no/such.ckpt"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        proc.wait(timeout=120)
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and runs[0].name[:10] == runs[1].name[:10]  # same day, different folders
    assert all(json.loads((run / "result.json").read_text())["status"] == "failed" for run in runs)


def test_bad_files_are_skipped_reported_and_training_goes_on(tmp_path, synthetic_root):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    (data / "cat.900.jpg").write_bytes(b"")
    (data / "dog.901.jpg").write_bytes(b"GIF89a not really")
    (data / "dog.902.jpg").write_bytes((data / "dog.0.jpg").read_bytes()[:300])
    cfg = compose_train(tmp_path, [f"data.root={data}", *TINY, "callbacks.gradcam=null"])
    result = train(cfg)
    assert 0.0 <= result["metrics"]["val/acc"] <= 1.0
    with open(tmp_path / "run" / "bad_files.csv") as f:
        reasons = {Path(row[0]).name: row[1] for row in list(csv.reader(f))[1:]}
    assert set(reasons) == {"cat.900.jpg", "dog.901.jpg", "dog.902.jpg"}
    assert reasons["cat.900.jpg"].startswith("empty file") and reasons["dog.902.jpg"].startswith("truncated")


def test_a_run_that_fails_on_its_data_leaves_no_empty_tensorboard_run(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        write_image(tmp_path / "photos" / "red" / name)
        write_image(tmp_path / "photos" / "blue" / name, color=(20, 20, 200))
    cfg = compose_train(tmp_path, [f"data.root={tmp_path / 'photos'}", *TINY])
    with pytest.raises(UserError, match="holds the classes"):
        train(cfg)
    assert not (tmp_path / "run" / "tensorboard").exists()
