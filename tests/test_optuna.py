"""hparams_search=optuna: a TPE search through hydra-optuna-sweeper, its study in the sweep folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from catdog.resolvers import CONF_DIR
from helpers import TINY, read_csv, run_cli
from test_sweep import hparams_session

needs_optuna = pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                                  reason="an optional extra: pip install -e '.[optuna]'")


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@needs_optuna
@pytest.mark.parametrize("metric, direction", [("val/acc_best", "maximize"), ("val/loss", "minimize")])
def test_preset_searches_four_settings_in_the_direction_of_the_metric(metric, direction):
    cfg = compose_with_hydra(["hparams_search=optuna", f"optimized_metric={metric}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.direction == direction
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert set(sweeper.params) == {"optimizer.lr", "optimizer.weight_decay", "model.augment.scale.0", "trainer.max_epochs"}


@needs_optuna
@pytest.mark.slow
def test_two_trial_search_then_one_more_continuing_the_study(tmp_path, synthetic_root):
    import optuna

    sweep = tmp_path / "sweep"
    args = ["hparams_search=optuna", f"data.root={synthetic_root}", f"paths.output_root={tmp_path}",
            f"hydra.sweep.dir={sweep}", *TINY, "test=false", "callbacks.gradcam=null"]  # TINY fixes max_epochs=1
    proc = run_cli("train", *args, "hydra.sweeper.n_trials=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(sweep / "summary.csv", records=True)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all("optimizer.lr=" in r["overrides"] and "model.augment.scale.0=" in r["overrides"] for r in rows)
    assert (sweep / "optimization_results.yaml").is_file()

    study = optuna.load_study(study_name="catdog", storage=f"sqlite:///{sweep}/optuna.db")
    assert sorted(t.value for t in study.trials) == sorted(float(r["val/acc_best"]) for r in rows)
    for row in rows:  # TensorBoard's HParams tab shows each trial's sampled values
        hparams, _ = hparams_session(Path(row["output_dir"]))
        lr = float(next(o for o in row["overrides"].split() if o.startswith("optimizer.lr=")).split("=")[1])
        assert hparams["optimizer.lr"] == pytest.approx(lr) and hparams["trainer.max_epochs"] == 1
    # The same folder again: the study continues (an interrupted search loses no finished trial).
    proc = run_cli("train", *args, "hydra.sweeper.n_trials=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="catdog", storage=f"sqlite:///{sweep}/optuna.db")
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len(read_csv(sweep / "summary.csv", records=True)) == 3


@needs_optuna
@pytest.mark.slow
def test_a_failed_trial_is_recorded_as_failed_and_the_search_goes_on(tmp_path, synthetic_root):
    import optuna

    sweep = tmp_path / "sweep"
    proc = run_cli("train", "hparams_search=optuna", f"data.root={synthetic_root}", f"paths.output_root={tmp_path}",
                   f"hydra.sweep.dir={sweep}", *TINY, "test=false", "callbacks.gradcam=null", "hydra.sweeper.n_trials=3",
                   "data.val_fraction=0.25,1.5")  # an axis of the search: 1.5 is refused
    assert proc.returncode == 1 and "Traceback" not in proc.stderr.split("jobs failed")[-1], proc.stderr[-3000:]
    study = optuna.load_study(study_name="catdog", storage=f"sqlite:///{sweep}/optuna.db")
    states = {t.params["data.val_fraction"]: t.state.name for t in study.trials}
    assert states == {0.25: "COMPLETE", 1.5: "FAIL"} and len(study.trials) == 3
    rows = read_csv(sweep / "summary.csv", records=True)
    assert {r["status"] for r in rows} == {"ok", "failed"} and len(rows) == 3
