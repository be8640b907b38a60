"""eval.py, predict.py and cam.py end to end, on a checkpoint trained once for the module.

Results are checked against a reference computed here from the checkpoint's weights (decode,
normalise with ImageNet mean/std, forward, softmax), so a wrong size, normalisation, class
mapping, TTA or clipping shows. A few runs go through the real command line (exit codes,
one-line errors, run folders); the rest call the entry functions with a composed config.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catdog.data.augment import centre_zoom
from catdog.data.decode import load_rgb
from catdog.errors import UserError
from catdog.gradcam.maps import grad_cam
from catdog.inference import load_model
from catdog.model.simple_cnn import SimpleCNN
from helpers import compose_train, read_csv, run_cli

# --- fixtures and references -----------------------------------------------------------------


def reference_probs(net: torch.nn.Module, paths, size: int = 32, flip: bool = False, zoom: float = 1.0) -> np.ndarray:
    """P(class) of the files, decoded one by one and handed to the network as uint8 pixels (it
    normalises them itself: test_model.py), or as their centre ``zoom`` enlarged."""
    x = torch.stack([torch.from_numpy(load_rgb(str(p), size).copy()).permute(2, 0, 1) for p in paths])
    if zoom != 1.0:
        x = centre_zoom(x, zoom)
    with torch.no_grad():
        p = net(x).softmax(dim=1)
        if flip:
            p = (p + net(x.flip(-1)).softmax(dim=1)) / 2
    return p.double().numpy()


def compose(tmp_path: Path, name: str, overrides: list[str]):
    return compose_train(tmp_path, ["device=cpu", *overrides], config_name=name)


def one_warning(stdout: str, text: str) -> list[str]:
    return [line for line in stdout.splitlines() if "[WARNING]" in line and text in line]


@pytest.fixture
def class_folders(tmp_path, trained) -> Path:
    """A few synthetic images as Cat/ and Dog/ sub-folders (PetImages style), one bad file among them."""
    root = tmp_path / "PetImages"
    for cls in ("cat", "dog"):
        (root / cls.title()).mkdir(parents=True)
        for i in range(4):
            shutil.copy(trained["root"] / f"{cls}.{i}.jpg", root / cls.title() / f"{i}.jpg")
    (root / "Cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


@pytest.fixture
def test1(tmp_path, trained) -> tuple[Path, dict[str, Path]]:
    """Kaggle's test1/ layout: N.jpg, plus a duplicate id, a non-numeric name and two bad files."""
    folder = tmp_path / "test1"
    folder.mkdir()
    sources = {"7.jpg": "cat.3.jpg", "2.jpg": "dog.3.jpg", "10.jpg": "cat.4.jpg", "1.jpg": "dog.4.jpg",
               "1.png": "cat.5.jpg", "extra.jpg": "dog.5.jpg"}
    for name, source in sources.items():
        shutil.copy(trained["root"] / source, folder / name)
    (folder / "5.jpg").write_bytes(b"")
    (folder / "9.jpg").write_text("this is a text file, not a picture\n")
    return folder, {name: folder / name for name in sources}


# --- eval ------------------------------------------------------------------------------------


def test_eval_cli_reports_metrics_on_kaggle_layout(tmp_path, trained):
    proc = run_cli("eval", f"ckpt_path={trained['ckpt']}", f"data.root={trained['root']}",
                   f"paths.output_root={tmp_path}", "device=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for word in ("accuracy", "F1", "AUROC", "log loss", "confusion matrix"):
        assert word in proc.stdout
    (run,) = (tmp_path / "eval").iterdir()  # a run folder of its own under outputs/eval/
    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "confusion_matrix.png").is_file() and (run / "confusion_matrix.csv").is_file()

    paths = sorted(trained["root"].glob("*.jpg"))
    labels = np.array([p.name.startswith("dog") for p in paths], dtype=int)
    ref = reference_probs(trained["net"], paths)
    assert metrics["images"] == 96 and metrics["layout"] == "kaggle-flat" and metrics["image_size"] == 32
    assert metrics["test/acc"] == pytest.approx(float((ref.argmax(1) == labels).mean()), abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(float(-np.log(ref[np.arange(96), labels]).mean()), abs=1e-4)
    assert 0.0 <= metrics["test/auroc"] <= 1.0 and 0.0 <= metrics["test/f1"] <= 1.0
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == 96 and matrix.sum(axis=1).tolist() == [48, 48]
    assert np.trace(matrix) / 96 == pytest.approx(metrics["test/acc"])
    rows = {Path(r[0]).name: r for r in read_csv(run / "predictions.csv")[1:]}
    for p, probs in zip(paths, ref):
        assert float(rows[p.name][4]) == pytest.approx(probs[1], abs=1e-5)


def test_eval_on_class_folders_maps_classes_and_skips_bad_files(tmp_path, trained, class_folders):
    from eval import evaluate

    result = evaluate(compose(tmp_path, "eval", [f"ckpt_path={trained['ckpt']}", f"data.root={class_folders}"]))
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["layout"] == "class-folders" and metrics["images"] == 8 and metrics["skipped"] == 1
    assert result["metrics"]["test/acc"] == metrics["test/acc"]
    bad = read_csv(run / "bad_files.csv")
    assert bad[0] == ["path", "reason"] and [Path(r[0]).name for r in bad[1:]] == ["broken.jpg"]
    paths = [class_folders / c / f"{i}.jpg" for c in ("Cat", "Dog") for i in range(4)]
    ref = reference_probs(trained["net"], paths)
    labels = np.array([0] * 4 + [1] * 4)
    assert metrics["test/acc"] == pytest.approx(float((ref.argmax(1) == labels).mean()), abs=1e-6)
    rows = read_csv(run / "predictions.csv")[1:]
    assert sorted((r[0], r[1]) for r in rows) == sorted((str(p), p.parent.name.lower()) for p in paths)
    got = {r[0]: [float(v) for v in r[3:]] for r in rows}
    np.testing.assert_allclose([got[str(p)] for p in paths], ref, atol=1e-5)


def test_the_commands_run_their_network_on_the_device_they_picked(trained, monkeypatch):
    """eval.py, predict.py, cam.py and map_report.py load the network on the CPU and hand it to
    run_network with the device they chose; on a GPU it failed with "two devices" until
    run_network moved the network there (session 24)."""
    from catdog.inference import run_network

    net, moved_to = trained["net"], []
    to = net.to
    monkeypatch.setattr(net, "to", lambda device: moved_to.append(device) or to(device))
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    (out,) = run_network(net, [x], torch.device("cpu"))
    assert moved_to == [torch.device("cpu")] and out.log_probs.shape == (2, 2)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("command", ["eval", "predict", "cam", "map_report"])
def test_the_commands_keep_freed_memory_as_train_does(tmp_path, trained, test1, monkeypatch, command):
    """Each command sets glibc's heap as train.py does before its first batch (2x faster on a CPU:
    bench/RESULTS.md, session 43), and a wrong value is a user's error. Stopped right there."""
    from catdog import allocator
    from cam import make_cams
    from eval import evaluate
    from map_report import map_report
    from predict import predict

    run = {"eval": evaluate, "predict": predict, "cam": make_cams, "map_report": map_report}[command]
    data = {"eval": f"data.root={trained['root']}", "predict": f"data.root={test1[0]}", "cam": f"images={test1[0]}",
            "map_report": f"data.root={trained['root']}"}[command]
    args = [f"ckpt_path={trained['ckpt']}", data]
    thresholds = []

    def stop_at_the_setting(threshold):
        thresholds.append(threshold)
        raise _Stop

    monkeypatch.setattr(allocator, "keep_freed_memory", stop_at_the_setting)
    with pytest.raises(_Stop):
        run(compose(tmp_path / "default", command, args))
    assert thresholds == [allocator.NEVER_TRIM]  # train.py's default
    with pytest.raises(UserError, match="keep_freed_memory=sometimes: use never"):
        run(compose(tmp_path / "wrong", command, [*args, "keep_freed_memory=sometimes"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_eval_on_a_gpu_scores_as_on_the_cpu(tmp_path, trained):
    metrics = {}
    for device in ("cpu", "cuda"):
        proc = run_cli("eval", f"ckpt_path={trained['ckpt']}", f"data.root={trained['root']}",
                       f"paths.output_root={tmp_path / device}", f"device={device}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        (run,) = (tmp_path / device / "eval").iterdir()
        metrics[device] = json.loads((run / "metrics.json").read_text())
    assert metrics["cuda"]["device"].startswith("cuda")
    assert metrics["cuda"]["test/loss"] == pytest.approx(metrics["cpu"]["test/loss"], abs=0.02)  # bf16 autocast on the GPU


def test_eval_scales_the_probabilities_by_the_checkpoints_temperature(tmp_path, trained):
    """A checkpoint of a calibrated run (model.calibrate) carries its temperature: eval.py's
    probabilities and log loss are the network's scores divided by it, its accuracy the same."""
    from eval import evaluate

    ckpt = torch.load(trained["ckpt"], weights_only=True)
    ckpt["catdog"]["temperature"] = 2.5
    torch.save(ckpt, tmp_path / "calibrated.ckpt")
    evaluate(compose(tmp_path, "eval", [f"ckpt_path={tmp_path / 'calibrated.ckpt'}", f"data.root={trained['root']}"]))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    rows = read_csv(tmp_path / "run" / "predictions.csv")[1:]
    paths = [Path(r[0]) for r in rows]
    labels = np.array([p.name.startswith("dog") for p in paths], dtype=int)
    ref = torch.as_tensor(reference_probs(trained["net"], paths)).log().div(2.5).softmax(dim=1).numpy()
    np.testing.assert_allclose(np.array([[float(v) for v in r[3:]] for r in rows]), ref, atol=1e-5)
    assert metrics["temperature"] == 2.5
    assert metrics["test/loss"] == pytest.approx(float(-np.log(ref[np.arange(len(labels)), labels]).mean()), abs=1e-4)
    assert metrics["test/acc"] == pytest.approx(float((ref.argmax(1) == labels).mean()), abs=1e-6)


def test_bare_original_state_dict_works_with_eval(tmp_path, class_folders):
    from eval import evaluate

    torch.manual_seed(1)
    net = SimpleCNN(32).eval()
    torch.save(net.state_dict(), tmp_path / "student.pth")  # what the original script saved
    evaluate(compose(tmp_path, "eval", [f"ckpt_path={tmp_path / 'student.pth'}", f"data.root={class_folders}"]))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["image_size"] == 32 and metrics["classes"] == ["cat", "dog"]
    paths = [Path(r[0]) for r in read_csv(tmp_path / "run" / "predictions.csv")[1:]]
    ref = reference_probs(net, paths)
    got = np.array([[float(v) for v in r[3:]] for r in read_csv(tmp_path / "run" / "predictions.csv")[1:]])
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_a_checkpoint_runs_in_the_layout_its_training_did(tmp_path, trained):
    """Channels-last unless the run said otherwise: on a CPU max-pools over NCHW tensors are 6-12x slower.
    (test_bare_original_state_dict_works_with_eval: the scores stay those of the NCHW network.)"""
    def channels_last(path) -> bool:
        conv = next(m for m in load_model(path).net.modules() if isinstance(m, torch.nn.Conv2d))
        return conv.weight.is_contiguous(memory_format=torch.channels_last)

    assert channels_last(str(trained["ckpt"]))
    ckpt = torch.load(trained["ckpt"], weights_only=True)
    ckpt["catdog"]["config"]["model"]["channels_last"] = False
    torch.save(ckpt, tmp_path / "nchw.ckpt")
    assert not channels_last(str(tmp_path / "nchw.ckpt"))


def test_ckpt_path_last_and_the_stored_tta_default(tmp_path, trained):
    assert load_model("last", trained["output_root"]).path == str(trained["ckpt"])
    assert load_model(str(trained["ckpt"])).tta_flip is False
    ckpt = torch.load(trained["ckpt"], weights_only=True)
    ckpt["catdog"]["config"]["model"].update(tta_flip=True, eval_zoom=0.875)
    torch.save(ckpt, tmp_path / "tta.ckpt")
    stored = load_model(str(tmp_path / "tta.ckpt"))
    assert stored.scoring() == {"tta_flip": True, "eval_zoom": 0.875, "temperature": 1.0}  # none fitted: model.calibrate=false
    assert stored.scoring(tta_flip=False, eval_zoom=1) == {"tta_flip": False, "eval_zoom": 1.0, "temperature": 1.0}  # a command's overrides
    for bad in (0, "abc"):
        with pytest.raises(UserError, match=f"eval_zoom={bad} must be above 0"):
            stored.scoring(eval_zoom=bad)
    for word in ("maybe", "no", 1):  # a word would be true
        with pytest.raises(UserError, match=f"tta_flip={word}: give true, false, or null"):
            stored.scoring(tta_flip=word)


# --- predict ---------------------------------------------------------------------------------


def test_predict_cli_writes_a_kaggle_submission(tmp_path, trained, test1):
    folder, files = test1
    proc = run_cli("predict", f"ckpt_path={trained['ckpt']}", f"data.root={folder}", f"paths.output_root={tmp_path}",
                   "device=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    csv_path = Path(proc.stdout.strip().splitlines()[-1])  # the path is printed last
    assert csv_path.is_file() and csv_path.parent.parent == tmp_path / "predict"
    assert json.loads((csv_path.parent / "result.json").read_text())["checkpoint"] == str(trained["ckpt"])  # which model wrote it
    rows = read_csv(csv_path)
    assert rows[0] == ["id", "label"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "7", "10", "extra"]  # numeric order, names after
    ref = dict(zip(files, reference_probs(trained["net"], files.values())[:, 1]))
    expected = {"1": "1.jpg", "2": "2.jpg", "7": "7.jpg", "10": "10.jpg", "extra": "extra.jpg"}  # 1.jpg wins over 1.png
    for ident, label in rows[1:]:
        assert float(label) == pytest.approx(np.clip(ref[expected[ident]], 0.005, 0.995), abs=1e-5)
    bad = {Path(r[0]).name: r[1] for r in read_csv(csv_path.parent / "bad_files.csv")[1:]}
    assert set(bad) == {"5.jpg", "9.jpg", "1.png"} and "duplicate id" in bad["1.png"]
    assert len(one_warning(proc.stdout, "skipped 3 of 8 files")) == 1
    assert sum("[ERROR]" in line and "1.jpg, 1.png" in line for line in proc.stdout.splitlines()) == 1


def test_predict_clipping_hard_labels_and_tta(tmp_path, trained, test1):
    from predict import predict

    folder, files = test1
    good = {k: v for k, v in files.items() if k != "1.png"}
    order = ["1.jpg", "2.jpg", "7.jpg", "10.jpg", "extra.jpg"]
    p_dog = dict(zip(good, reference_probs(trained["net"], good.values())[:, 1]))
    p_tta = dict(zip(good, reference_probs(trained["net"], good.values(), flip=True)[:, 1]))
    base = [f"ckpt_path={trained['ckpt']}", f"data.root={folder}"]

    def labels(tag: str, overrides: list[str]) -> list[str]:
        result = predict(compose(tmp_path / tag, "predict", [*base, *overrides]))
        rows = read_csv(Path(result["csv"]))
        assert rows[0] == ["id", "label"] and [r[0] for r in rows[1:]] == ["1", "2", "7", "10", "extra"]
        return [r[1] for r in rows[1:]]

    clipped = labels("clip", ["clip_eps=0.45"])
    assert [float(v) for v in clipped] == pytest.approx([np.clip(p_dog[n], 0.45, 0.55) for n in order], abs=1e-6)
    hard = labels("hard", ["hard_labels=true"])
    assert hard == [str(int(p_dog[n] > 0.5)) for n in order]
    tta = labels("tta", ["tta_flip=true", "clip_eps=0"])
    assert [float(v) for v in tta] == pytest.approx([p_tta[n] for n in order], abs=1e-5)
    assert max(abs(p_tta[n] - p_dog[n]) for n in order) > 1e-4  # the mirror image really was used
    p_zoom = dict(zip(good, reference_probs(trained["net"], good.values(), zoom=0.5)[:, 1]))
    zoomed = labels("zoom", ["eval_zoom=0.5", "clip_eps=0"])
    assert [float(v) for v in zoomed] == pytest.approx([p_zoom[n] for n in order], abs=1e-5)
    assert max(abs(p_zoom[n] - p_dog[n]) for n in order) > 1e-4  # the centre really was enlarged
    with pytest.raises(UserError, match="clip_eps"):
        predict(compose(tmp_path / "bad", "predict", [*base, "clip_eps=0.5"]))


# --- cam -------------------------------------------------------------------------------------


def test_cam_cli_writes_pictures_and_maps_and_skips_bad_files(tmp_path, trained, test1):
    folder, files = test1
    proc = run_cli("cam", f"ckpt_path={trained['ckpt']}", f"images={folder}", f"paths.output_root={tmp_path}",
                   "save_maps=true", "method=gradcam++", "device=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "cam").iterdir()
    assert json.loads((run / "result.json").read_text())["checkpoint"] == str(trained["ckpt"])
    pictures = sorted(p.name for p in run.glob("*.png"))
    assert pictures == sorted(["1_jpg.png", "1_png.png", "2.png", "7.png", "10.png", "extra.png"])
    with Image.open(run / "7.png") as img:
        assert img.size == (3 * 128, 128 + 16)  # image | heatmap | overlay, under a title
    for name, path in [("7", files["7.jpg"]), ("1_png", files["1.png"])]:
        cam = np.load(run / f"{name}.npy")
        assert cam.shape == (32, 32) and cam.dtype == np.float32 and cam.min() >= 0 and cam.max() <= 1
        x = torch.from_numpy(load_rgb(str(path), 32).copy()).permute(2, 0, 1)[None]
        np.testing.assert_allclose(cam, grad_cam(trained["net"], x, "pool1", None, "gradcam++")[0].numpy(), atol=1e-4)  # the default layer
    bad = {Path(r[0]).name for r in read_csv(run / "bad_files.csv")[1:]}
    assert bad == {"5.jpg", "9.jpg"}
    assert len(one_warning(proc.stdout, "skipped 2 of 8 files")) == 1


def test_cam_on_one_file_with_options(tmp_path, trained, test1):
    from cam import make_cams

    folder, files = test1
    base = [f"ckpt_path={trained['ckpt']}", f"images={files['2.jpg']}"]
    make_cams(compose(tmp_path, "cam", [*base, "method=layercam", "layer=conv2", "target=cat"]))
    assert sorted(p.name for p in (tmp_path / "run").glob("*.png")) == ["2.png"]
    assert not list((tmp_path / "run").glob("*.npy"))  # maps only with save_maps=true
    rows = read_csv(tmp_path / "run" / "predictions.csv")
    assert rows[1][1] == "2.png" and rows[1][2] in ("cat", "dog")
    for wrong, message in [("method=gradcam+++", "method"), ("layer=conv9", "conv1, conv2, conv3"), ("target=horse", "target")]:
        with pytest.raises(UserError, match=message):
            make_cams(compose(tmp_path / "err", "cam", [*base, wrong]))


def test_cam_contrastive_score_cam(tmp_path, trained, test1):
    """The new methods and the contrastive target through cam.py: the saved map is grad_cam's."""
    from cam import make_cams

    folder, files = test1
    make_cams(compose(tmp_path, "cam", [f"ckpt_path={trained['ckpt']}", f"images={files['2.jpg']}", "method=scorecam",
                                        "target=dog", "contrast=true", "save_maps=true"]))
    x = torch.from_numpy(load_rgb(str(files["2.jpg"]), 32).copy()).permute(2, 0, 1)[None]
    expected = grad_cam(trained["net"], x, "pool1", 1, "scorecam", contrast=True)[0].numpy()  # the default layer
    np.testing.assert_allclose(np.load(tmp_path / "run" / "2.npy"), expected, atol=1e-4)


# --- user errors through the command line ---------------------------------------------------


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"fc1.weight": Payload()}}, path)
    torch.load(path, weights_only=False)  # the payload is real: unpickling it runs the command
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("script", ["eval", "predict", "cam"])
def test_user_errors_exit_2_with_one_line(tmp_path, trained, script):
    """One failure per script, so each entry point's handling is covered once (a subprocess costs ~5 s)."""
    data = f"images={trained['root'] / 'cat.0.jpg'}" if script == "cam" else f"data.root={trained['root']}"
    marker = tmp_path / "pwned"
    if script == "eval":  # trained at 32 px, asked for 64
        args, expected = [f"ckpt_path={trained['ckpt']}", "data.image_size=64"], "image_size=32, not 64"
    elif script == "predict":  # no checkpoint given
        args, expected = [], "ckpt_path is not set: add ckpt_path="
    else:  # a checkpoint that would run code
        _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
        args, expected = [f"ckpt_path={tmp_path / 'evil.ckpt'}"], "refusing to load"
    proc = run_cli(script, *args, data, f"paths.output_root={tmp_path}", "device=cpu")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not marker.exists()


def test_library_noise_is_dropped_and_the_runs_own_messages_kept(caplog):
    import logging

    from lightning.pytorch.utilities import rank_zero_info

    from catdog.task import quiet_library_noise

    quiet_library_noise()
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
        rank_zero_info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
    with warnings.catch_warnings(record=True) as caught:
        quiet_library_noise()
        warnings.warn("The dirpath has changed from 'outputs/runs/a' to 'outputs/runs/b', therefore …")
        warnings.warn("Precision bf16-mixed is not supported by the model summary.  Estimated model size in MB …")
        warnings.warn("a warning about the run itself")
    assert [str(w.message) for w in caught] == ["a warning about the run itself"]
