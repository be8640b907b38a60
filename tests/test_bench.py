"""The benchmark scripts a GPU lease runs (bench/gpu_session.sh) work end to end, on tiny
settings on the CPU: a broken script would waste the lease. What they measure is not tested."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import ROOT, write_oxford_pets

pytestmark = pytest.mark.slow  # over 15 s each on 2 CPU cores: `make test-slow` and CI run them


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_host_overhead_measures_every_loop_and_part(tmp_path):
    out = tmp_path / "host.json"
    _run("bench/host_overhead.py", "--steps", "12", "--images", "400", "--epochs", "2", "--skip", "augment",
         "--out", str(out), "--", "trainer.precision=32-true")
    result = json.loads(out.read_text())
    for loop in ("bare", "lightning", "ours"):
        assert result[f"{loop}_ms_per_step"] > 0
    assert set(result["seed_ms"]) == {"torch.manual_seed", "ours"}
    assert set(result["optimizer_ms"]) == {"for-loop", "foreach", "fused"}


def test_recipes_scores_a_run_on_the_held_out_split(tmp_path, synthetic_root):
    _run("bench/recipes.py", "--data", str(synthetic_root), "--out", str(tmp_path), "--jobs", "defaults:0", "--",
         "data.image_size=32", "data.batch_size=16", "trainer.max_epochs=2", "data.num_workers=0",
         "trainer.precision=32-true", "model.compile=false")
    rows = [json.loads(line) for line in (tmp_path / "recipes.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and "error" not in rows[0], rows
    assert 0.0 <= rows[0]["val/acc"] <= 1.0 and rows[0]["val/loss"] > 0
    summary = json.loads((tmp_path / "recipes_summary.json").read_text())
    assert summary[0]["recipe"] == "defaults" and summary[0]["runs"] == 1


def test_learning_curve_trains_each_size_on_the_same_held_out_split_and_scores_its_maps(tmp_path, synthetic_root):
    probe = write_oxford_pets(tmp_path / "pets")
    out = tmp_path / "curve"
    command = ["bench/learning_curve.py", "--data", str(synthetic_root), "--out", str(out), "--sizes", "24", "64",
               "--parallel", "2", "--probe", str(probe), "--", "data.image_size=32", "data.batch_size=16",
               "trainer.max_epochs=1", "data.num_workers=0", "trainer.precision=32-true", "model.compile=false"]
    _run(*command)
    rows = [json.loads(line) for line in (out / "recipes.jsonl").read_text().splitlines()]
    assert sorted(r["recipe"] for r in rows) == ["n24", "n64"] and not any("error" in r for r in rows), rows
    for size in (24, 64):  # the size reaches the run (test_split.py: what data.train_limit does)
        assert OmegaConf.load(out / f"n{size}_seed0" / ".hydra" / "config.yaml").data.train_limit == size

    # Run again, as after an interruption: the finished runs are read, not trained again, and still scored
    checkpoint = out / "n24_seed0" / "checkpoints" / "last.ckpt"
    written = checkpoint.stat().st_mtime_ns
    _run(*command)
    again = [json.loads(line) for line in (out / "recipes.jsonl").read_text().splitlines()][2:]
    assert sorted((r["recipe"], r.get("reused")) for r in again) == [("n24", True), ("n64", True)], again
    assert checkpoint.stat().st_mtime_ns == written and again[0]["val/acc"] is not None
    for size in (24, 64):  # each run's maps scored by map_report.py, with the callback's method and layer
        report = (out / f"n{size}_seed0" / "map_report" / "map_report.csv").read_text().splitlines()
        assert [line.split(",")[:2] for line in report[1:]] == [["hirescam", "pool1"], ["centre", "-"], ["uniform", "-"]]
    table = (out / "learning_curve.md").read_text()
    point = re.compile(r"\| (24|64) \| 1 \| [0-9.]+% \+- 0\.0 \| [0-9.]+ \+- 0\.000 \| [01]\.\d{3} \+- 0\.000 \| [0-9.]+% \+- 0\.0 \|")
    assert len(point.findall(table)) == 2, table
    assert "Centred Gaussian: mass 0." in table, table
    assert (out / "learning_curve.png").stat().st_size > 0

    # Another setting in the same folder is trained anew
    _run(*[a.replace("max_epochs=1", "max_epochs=2") for a in command if a != "64"])
    last = json.loads((out / "recipes.jsonl").read_text().splitlines()[-1])
    assert (last["recipe"], last.get("reused")) == ("n24", None) and checkpoint.stat().st_mtime_ns != written


def test_gradcam_cost_reports_the_callback_its_writer_thread_and_tensorboards(synthetic_root):
    proc = _run("bench/gradcam_cost.py", f"data.root={synthetic_root}", "data.image_size=32", "data.batch_size=16",
                "trainer.max_epochs=2", "data.num_workers=0", "trainer.precision=32-true", "model.compile=false")
    shares = re.findall(r"= ([0-9.]+)%", proc.stdout)
    # main thread, without curves, writer; then TensorBoard's thread, near 0 with the checksums in C
    assert len(shares) == 4 and all(float(s) > 0 for s in shares[:3]), proc.stdout
    whole, without = float(shares[0]), float(shares[1])
    curves = float(re.search(r"the deletion/insertion curves ([0-9.]+) ms", proc.stdout).group(1))
    assert curves > 0 and without < whole, proc.stdout  # the last epoch (the second) draws the curves
    assert "both together at most" in proc.stdout and "without the curves" in proc.stdout
    assert "TensorBoard's event-file thread" in proc.stdout and "all three together at most" in proc.stdout


def test_throughput_reports_every_pipeline_on_both_networks_and_stops_ours_at_its_limit(tmp_path):
    """`make bench` end to end; (b) is far too long for its limit, so it is stopped and reports the
    epochs it finished: what a short GPU lease relies on (bench/gpu_check.sh's OURS_LIMIT)."""
    proc = _run("bench/throughput.py", "--images", "40", "--size", "32", "--batch", "8", "--epochs", "100000",
                "--ours-limit", "20", "--original-steps", "2", "--ceiling-steps", "2", "--ceiling-round-s", "0",
                "--out", str(tmp_path), "--", "trainer=cpu", "data.num_workers=0")
    result = json.loads((tmp_path / "throughput.json").read_text())
    assert result["cache_build_images_per_s"] > 0 and result["original_images_per_s"] > 0
    assert "bf16" in result["machine"]["device"]  # says whether this CPU has native bf16
    assert not result["seed"]["batch_norm"] and result["default"]["batch_norm"]  # the original network, and ours
    for name in ("seed", "default"):
        net = result[name]
        ours = net["ours"]
        assert ours["stopped_at_limit"] and 2 < ours["epochs_done"] < 100000, ours
        assert ours["images_per_s"] > 0 and len(ours["per_epoch"]) == ours["epochs_done"]
        assert set(net["ceiling"]["variants"]) == {"eager", "compiled"}
        # the ceiling took turns with ours: a round before it and one after each epoch it finished
        # before the limit (the epoch the limit cut may be logged, untimed), each of at least two repeats
        for v in net["ceiling"]["variants"].values():
            assert ours["epochs_done"] <= len(v["round_medians"]) <= ours["epochs_done"] + 1
            assert len(v["rates"]) == 2 * len(v["round_medians"])
        assert net["ceiling"]["images_per_s"] == max(v["median"] for v in net["ceiling"]["variants"].values())
        best = net["ceiling"]["variants"][net["ceiling"]["best"]]["round_medians"]
        assert net["verdict"]["per_epoch"][0] == ours["per_epoch"][1] / ((best[1] + best[2]) / 2)
        parts = net["memory"]["parts_gib"]
        assert parts["parameters"] > 0 and parts["activations saved for backward"] > 0
        assert abs(sum(parts.values()) - net["memory"]["peak_rss_gib"]) < 1e-6
    assert "stopped at the limit after" in proc.stdout and "ours / original, the same network" in proc.stdout


def test_ours_waits_for_the_ceiling_between_epochs_without_counting_the_wait(tmp_path):
    """The ceiling's rounds run while ours waits at its epoch's end (bench/epoch_gate.py): three
    seconds of ceiling after each epoch must not show in ours' epoch times, or ours would be slowed
    by its own bound. (Three, not two: on cores busy with other work a 40-image epoch took 2.1 s.)"""
    for _ in range(2):  # twice into one folder, as `make bench` runs: the second reads only its own epochs
        _run("bench/throughput.py", "--images", "40", "--size", "32", "--batch", "8", "--epochs", "3", "--networks", "seed",
             "--skip", "original", "cache", "memory", "--ceiling-variants", "eager", "--ceiling-steps", "1",
             "--ceiling-round-s", "3", "--out", str(tmp_path), "--", "trainer=cpu", "data.num_workers=0")
    result = json.loads((tmp_path / "throughput.json").read_text())
    assert result["seed"]["ours"]["epochs_done"] == 3 and len(result["seed"]["ours"]["per_epoch"]) == 3
    gate = sorted(p.name for p in (tmp_path / "seed-gate").iterdir())
    assert gate == ["done_0", "done_1", "done_2", "go_0", "go_1", "go_2"]
    assert len(result["seed"]["ceiling"]["variants"]["eager"]["round_medians"]) == 4
    sys.path.insert(0, str(ROOT / "bench"))
    from throughput import read_scalars

    seconds = read_scalars(tmp_path / "seed-run", ("perf/epoch_train_s",))["perf/epoch_train_s"]
    assert len(seconds) == 3 and max(seconds) < 3.0, seconds  # 40 images at 32 px: well under a second each, alone
def test_the_ceilings_noise_is_the_spread_of_its_rounds_not_of_single_repeats():
    """Repeats wander with the host over seconds; what bounds another run's estimate is how far
    whole rounds lie apart (bench/RESULTS.md, session 17)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from throughput import Ceiling

    ceiling = Ceiling.__new__(Ceiling)  # the timings alone: no network to build
    ceiling.rounds = {"eager": [[90.0, 110.0, 100.0], [96.0, 104.0, 100.0]], "compiled": [[50.0, 50.0], [50.0, 50.0]]}
    result = ceiling.result()
    assert result["best"] == "eager" and result["images_per_s"] == 100.0
    assert result["noise"] == 0.0 and result["repeat_noise"] == pytest.approx(0.10)
    ceiling.rounds["eager"][1] = [104.0, 106.0, 108.0]  # round medians 100 and 106 about a median of 105: +-2.9%
    assert ceiling.result()["noise"] == pytest.approx((106.0 - 100.0) / 2 / 105.0)


def test_ours_steady_rate_is_the_median_of_the_epochs_after_the_first():
    """Not the faster of two: the ceiling it is set against is a median too."""
    sys.path.insert(0, str(ROOT / "bench"))
    from throughput import steady_rate

    assert steady_rate([5.0, 18.0, 21.0]) == 19.5
    assert steady_rate([5.0, 18.0, 30.0, 21.0]) == 21.0
    assert steady_rate([7.0]) == 7.0  # one epoch: all there is


def test_ours_share_of_the_ceiling_is_taken_epoch_by_epoch_against_the_rounds_beside_each():
    """A host whose speed halves halfway through slows ours and its ceiling alike: the share stays,
    where a ceiling timed before and after ours would have moved with the drift."""
    sys.path.insert(0, str(ROOT / "bench"))
    from throughput import verdict

    # the first epoch (warm-up) is left out; epoch e lies between rounds e and e + 1
    v = verdict([10.0, 90.0, 90.0, 45.0, 45.0, 45.0], [100.0, 100.0, 100.0, 50.0, 50.0, 50.0, 50.0])
    assert v["per_epoch"] == pytest.approx([0.9, 1.2, 0.9, 0.9, 0.9])  # the epoch astride the drop: against its mean
    assert v["share"] == pytest.approx(0.9) and not v["flag"]
    # noise: the median's standard error, 1.25 sigma / sqrt(n), relative to the share
    assert v["noise"] == pytest.approx(1.2533 * statistics.stdev(v["per_epoch"]) / 5**0.5 / 0.9)
    fast = verdict([10.0, 120.0, 121.0, 120.0, 121.0], [100.0] * 6)
    assert fast["flag"] and fast["share"] == pytest.approx(1.205)  # above the ceiling beyond the noise: flagged
    within = verdict([10.0, 100.0, 104.0, 98.0, 106.0], [100.0] * 6)  # 2% above it, inside its noise of 2.2%
    assert within["share"] == pytest.approx(1.02) and not within["flag"]
    assert verdict([10.0], [100.0, 100.0]) == {}  # no steady epoch, no share


def test_calibration_scores_a_checkpoint_on_held_out_photos_cross_fitted(tmp_path, trained):
    proc = _run("bench/calibration.py", "--images", str(trained["root"]), "--cache-dir", str(tmp_path / "cache"),
                "--halvings", "3", str(trained["ckpt"]))
    (row,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert row["images"] == 96 and 0.0 <= row["accuracy"] <= 1.0
    assert row["temperature"] == 1.0 and row["log_loss_own_temperature"] == pytest.approx(row["log_loss"])  # none fitted
    assert row["log_loss_cross_fitted"] > 0 and 0.05 <= row["temperature_cross_fitted"] <= 20
