"""Sweeps: the summary callback (summary.csv / summary.md), the hparams_search preset, the
HParams tab of each job, a failing job, and the SLURM launcher config."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from catdog.resolvers import CONF_DIR
from catdog.sweep_summary import SweepSummary
from helpers import ROOT, TINY, read_csv, run_cli



# -- the callback on its own, on job folders made by hand ---------------------------------


def make_job(sweep: Path, num: int, overrides: list[str], result: dict | None) -> Path:
    job = sweep / f"{num}_{','.join(o for o in overrides if '/' not in o)}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if result is not None:
        (job / "result.json").write_text(json.dumps(result))
    return job


def job_config(sweep: Path, job: Path | None = None, num: int = 0, overrides=(), mode: str = "MULTIRUN",
               metric: str = "val/acc_best"):
    return OmegaConf.create({
        "optimized_metric": metric,
        "hydra": {"mode": mode, "sweep": {"dir": str(sweep)}, "job": {"num": num},
                  "runtime": {"output_dir": str(job or sweep)}, "overrides": {"task": list(overrides)}},
    })


def ok(acc_best: float, test_acc: float | None = None, seconds: float = 3.0) -> dict:
    metrics = {"val/acc_best": acc_best, "val/acc": acc_best, "val/loss": 1 - acc_best}
    if test_acc is not None:
        metrics["test/acc"] = test_acc
    return {"status": "ok", "run_time_s": seconds, "metrics": metrics, "objective": acc_best}


def completed() -> JobReturn:
    ret = JobReturn()
    ret.status, ret.return_value = JobStatus.COMPLETED, 0.0
    return ret


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Four finished jobs: two good ones (one without a test split), a failed one, a NaN one."""
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["data.root=/data", "paths.output_root=/out", "optimizer.lr=0.1"], ok(0.60, 0.55))
    make_job(sweep, 1, ["data.root=/data", "paths.output_root=/out", "optimizer.lr=0.01"], ok(0.90))
    make_job(sweep, 2, ["data.root=/data", "paths.output_root=/out", "optimizer.lr=10"],
             {"status": "failed", "error": "loss | is NaN\nat step 3", "run_time_s": 0.5})
    make_job(sweep, 3, ["data.root=/data", "paths.output_root=/out", "optimizer.lr=1"], ok(math.nan))
    return sweep


def test_summary_best_first_failed_last_after_each_job(sweep):
    job = next(sweep.glob("1_*"))
    SweepSummary().on_job_end(job_config(sweep, job, 1, ["data.root=/data", "paths.output_root=/out", "optimizer.lr=0.01"]),
                              completed())
    rows = read_csv(sweep / "summary.csv", records=True)
    assert [r["job"] for r in rows] == ["1", "0", "3", "2"]  # best val/acc_best first, NaN after, failed last
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed"]
    assert [r["overrides"] for r in rows][:2] == ["optimizer.lr=0.01", "optimizer.lr=0.1"]  # no data.root, paths.*
    assert float(rows[0]["val/acc_best"]) == 0.9 and rows[0]["test/acc"] == ""  # no test split: blank
    assert float(rows[1]["test/acc"]) == 0.55 and float(rows[1]["run_time_s"]) == 3.0
    assert rows[3]["error"] == "loss | is NaN\nat step 3" and rows[3]["val/acc_best"] == ""

    md = (sweep / "summary.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4
    assert table[0].startswith("| rank | job | overrides | val/acc_best | test/acc | time (s) | status | error")
    assert "| 1 | 1 | optimizer.lr=0.01 | 0.9000 |  | 3.0 | ok |" in table[2]
    assert table[-1].endswith("| failed | loss \\| is NaN at step 3 |")  # escaped, one line
    assert "4 jobs (3 ok, 1 failed)" in md and "data.root" not in md and "paths.output_root" not in md


def test_summary_sorts_a_loss_ascending(sweep):
    cfg = job_config(sweep, metric="val/loss")
    rows = SweepSummary().write(sweep, SweepSummary.metric(cfg))
    assert [r.num for r in rows] == [1, 0, 3, 2]  # val/loss = 1 - acc: 0.1 < 0.4 < NaN; failed last
    assert "val/loss" in read_csv(sweep / "summary.csv", records=True)[0]


def test_end_of_sweep_prints_the_table_and_exits_1_when_a_job_failed(sweep, capsys):
    with pytest.raises(SystemExit) as stop:
        SweepSummary().on_multirun_end(job_config(sweep))
    assert stop.value.code == 1
    out, err = capsys.readouterr()
    assert "| rank | job | overrides |" in out and "optimizer.lr=0.01" in out
    assert err.strip() == f"1 of 4 jobs failed: see {sweep / 'summary.md'}"


def test_end_of_sweep_without_failures_exits_normally(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["optimizer.lr=0.1", "seed=1"], ok(0.7))
    make_job(sweep, 1, ["optimizer.lr=0.2", "seed=1"], ok(0.8))
    SweepSummary().on_multirun_end(job_config(sweep))
    out, err = capsys.readouterr()
    assert "Common to all jobs: `seed=1`" in out and "| 1 | 1 | optimizer.lr=0.2 |" in out and err == ""


def test_interrupted_sweep_keeps_a_summary(tmp_path):
    """A job still running (no result.json) is listed as such; at the end it counts as failed."""
    sweep = tmp_path / "sweep"
    first = make_job(sweep, 0, ["optimizer.lr=0.1"], ok(0.7))
    make_job(sweep, 1, ["optimizer.lr=0.2"], None)
    SweepSummary().on_job_end(job_config(sweep, first, 0, ["optimizer.lr=0.1"]), completed())
    assert [r["status"] for r in read_csv(sweep / "summary.csv", records=True)] == ["ok", "running"]
    rows = SweepSummary().write(sweep, "val/acc_best", final=True)
    assert rows[1].status == "failed" and "did not finish" in rows[1].error


def test_job_without_result_json_is_summarised_from_hydra(tmp_path):
    """A task that does not write result.json (not wrapped in hydra_task) still gets a row."""
    sweep = tmp_path / "sweep"
    job = sweep / "0_x"
    job.mkdir(parents=True)
    ret = JobReturn()
    ret.status, ret._return_value = JobStatus.FAILED, ValueError("boom")
    callback = SweepSummary()
    callback.on_job_end(job_config(sweep, job, 0, ["optimizer.lr=0.1"]), ret)
    [row] = read_csv(sweep / "summary.csv", records=True)
    assert (row["job"], row["overrides"], row["status"], row["error"]) == ("0", "optimizer.lr=0.1", "failed", "ValueError: boom")


def test_single_run_is_left_alone(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps(ok(0.5)))
    callback = SweepSummary()
    callback.on_job_end(job_config(tmp_path, run, mode="RUN"), completed())
    callback.on_run_end(job_config(tmp_path, run, mode="RUN"))
    assert not list(tmp_path.glob("**/summary.*"))


# -- configs --------------------------------------------------------------------------------


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_summary_callback_is_registered():
    cfg = compose_with_hydra([])
    assert cfg.hydra.callbacks.sweep_summary._target_ == "catdog.sweep_summary.SweepSummary"


def test_hparams_search_preset_sweeps_lr_and_epochs():
    cfg = compose_with_hydra(["hparams_search=lr_epochs"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert params["optimizer.lr"] == "3e-4,1e-3,3e-3" and params["trainer.max_epochs"] == "20,40"
    assert cfg.optimized_metric == "val/acc_best"


def _have_submitit_launcher() -> bool:
    try:  # find_spec of a dotted name imports its parent, which may not exist at all
        return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
    except ModuleNotFoundError:
        return False


def test_slurm_launcher_config_says_one_gpu_per_sweep_job():
    """Read as plain YAML, so it is checked even where the optional plugin is not installed."""
    conf = OmegaConf.load(ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml")
    assert list(conf.defaults) == ["submitit_slurm", "_self_"]
    assert (conf.gpus_per_node, conf.tasks_per_node, conf.nodes) == (1, 1, 1)
    assert conf.timeout_min > 0 and conf.partition is None


@pytest.mark.skipif(not _have_submitit_launcher(),
                    reason="hydra-submitit-launcher is an optional extra: pip install -e '.[slurm]'")
def test_slurm_launcher_config_composes():
    cfg = compose_with_hydra(["hydra/launcher=slurm"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.timeout_min > 0 and launcher.cpus_per_task > 0 and launcher.mem_gb > 0
    assert launcher.partition is None


# -- a real sweep from the command line -----------------------------------------------------


def hparams_session(job: Path) -> tuple[dict, list[str]]:
    """The hparams a job wrote for TensorBoard's HParams tab, and the metric tags it declared."""
    hparams, metric_tags = {}, []
    for events in job.glob("tensorboard/events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        try:
            contents = acc.PluginTagToContent("hparams").values()
        except KeyError:  # this file has no hparams summary (e.g. the one trainer.test wrote)
            continue
        for content in contents:
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                hparams.update({k: v.number_value if v.HasField("number_value") else v.string_value
                                for k, v in data.session_start_info.hparams.items()})
            if data.HasField("experiment"):
                metric_tags += [m.name.tag for m in data.experiment.metric_infos]
    return hparams, metric_tags


def scalar_values(job: Path) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for events in job.glob("tensorboard/events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return values


@pytest.mark.slow
def test_sweep_from_the_preset_with_a_failing_job(tmp_path, synthetic_root):
    """hparams_search=lr_epochs without -m; the command line replaces both of its axes: two
    learning rates x a valid and an invalid validation fraction = 4 jobs, 2 of which fail."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "train", "hparams_search=lr_epochs", f"data.root={synthetic_root}",
         f"paths.output_root={tmp_path}", f"hydra.sweep.dir={sweep}", *TINY, "data.test_fraction=0.2",
         "optimizer.lr=0.001,0.0001", "data.val_fraction=1.5,0.25")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "2 of 4 jobs failed" in proc.stderr
    assert "| rank | job | overrides |" in proc.stdout

    rows = read_csv(sweep / "summary.csv", records=True)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert {r["job"] for r in rows[:2]} == {"1", "3"}  # the jobs with data.val_fraction=0.25
    for row in rows[:2]:
        assert 0 <= float(row["val/acc_best"]) <= 1 and 0 <= float(row["test/acc"]) <= 1
        assert "trainer.max_epochs=1" in row["overrides"] and "data.root" not in row["overrides"]
    assert float(rows[0]["val/acc_best"]) >= float(rows[1]["val/acc_best"])
    for row in rows[2:]:
        assert "data.val_fraction=1.5" in row["overrides"] and "must be in [0, 1)" in row["error"]
    assert (sweep / "summary.md").read_text().count("| failed |") == 2

    # TensorBoard's HParams tab: each job's hyperparameters, and the metrics beside them are
    # real scalars of the run (no placeholder hp_metric).
    for row in rows[:2]:
        job = Path(row["output_dir"])
        hparams, metric_tags = hparams_session(job)
        lr = float(next(o for o in row["overrides"].split() if o.startswith("optimizer.lr=")).split("=")[1])
        assert hparams["optimizer.lr"] == pytest.approx(lr) and hparams["trainer.max_epochs"] == 1
        assert "val/acc_best" in metric_tags and "test/acc" in metric_tags
        scalars = scalar_values(job)
        assert "hp_metric" not in scalars
        assert scalars["val/acc_best"] and all(0 <= v <= 1 for v in scalars["val/acc_best"])
        assert scalars["val/acc_best"][-1] == pytest.approx(float(row["val/acc_best"]))
        assert scalars["test/acc"][-1] == pytest.approx(float(row["test/acc"]))
