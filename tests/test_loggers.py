"""logger=csv|mlflow|wandb|many and logger=[a,b]: each gets the scalars and hyperparameters,
and those that take images get the Grad-CAM maps and the confusion matrix (catdog.log_image)."""

from __future__ import annotations

import time

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import TINY, compose_train, read_csv
from train import train

# Two Grad-CAM images, no box scores, no gallery: the images are what is checked, not their number.
FEW = ["callbacks.gradcam.num_images=2", "callbacks.gradcam.score_images=0", "callbacks.gradcam.top_losses=0",
       "test=false", "optimizer.lr=0.003"]


def tiny_run(tmp_path, synthetic_root, *overrides: str):
    cfg = compose_train(tmp_path, [f"data.root={synthetic_root}", *TINY, *FEW, *overrides])
    return train(cfg), tmp_path / "run"


@pytest.mark.parametrize("choice", ["many", "[tensorboard,csv]"])
def test_several_loggers_at_once_compose(tmp_path, choice):
    cfg = compose_train(tmp_path, [f"logger={choice}"])
    assert set(cfg.logger) == {"tensorboard", "csv"}


def test_tensorboard_and_csv_together(tmp_path, synthetic_root):
    _, run = tiny_run(tmp_path, synthetic_root, "logger=[tensorboard,csv]")
    rows = read_csv(run / "csv" / "metrics.csv", records=True)
    assert any(r.get("val/acc") for r in rows) and any(r.get("train/loss") for r in rows)
    assert yaml.safe_load((run / "csv" / "hparams.yaml").read_text())["optimizer.lr"] == 0.003
    images = set()
    for events in run.glob("tensorboard/events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        images |= set(acc.Tags()["images"])
    assert {"gradcam/grid", "gradcam/sample_00", "val/confusion_matrix"} <= images


def test_mlflow_gets_metrics_params_and_images(tmp_path, synthetic_root):
    pytest.importorskip("mlflow", reason="an optional extra: pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    tiny_run(tmp_path, synthetic_root, "logger=mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("catdog").experiment_id])
    assert "val/acc" in run.data.metrics and float(run.data.params["optimizer.lr"]) == 0.003
    pngs = [p.name for p in (tmp_path / "mlartifacts").glob("**/*.png")]
    for tag in ("gradcam~grid", "gradcam~sample_00", "val~confusion_matrix"):  # MLflow writes / as ~
        assert any(name.startswith(tag) for name in pngs), (tag, pngs[:5])


def test_wandb_offline_keeps_its_run_in_the_run_folder(tmp_path, synthetic_root, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="an optional extra: pip install -e '.[wandb]'")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tiny_run(tmp_path, synthetic_root, "logger=wandb")
    assert wandb.run is None  # finished: the next sweep job in this process gets its own run
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    images = [p.relative_to(offline / "files" / "media" / "images").as_posix() for p in offline.glob("files/media/images/**/*.png")]
    for tag in ("gradcam/grid", "gradcam/sample_00", "val/confusion_matrix"):
        assert any(name.startswith(tag) for name in images), (tag, images[:5])
    # Offline, the config is only in the run's record (for `wandb sync`), which W&B's service
    # process may still be writing for a moment after finish() returns.
    (record,) = offline.glob("run-*.wandb")
    deadline = time.monotonic() + 20
    while b"optimizer.lr" not in record.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b"optimizer.lr" in record.read_bytes()


def test_tensorboard_gets_the_picture_losslessly():
    import io

    import numpy as np
    from PIL import Image

    from catdog.log_image import _image_summary

    picture = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    image = _image_summary("gradcam/grid", picture).value[0].image
    assert (image.height, image.width, image.colorspace) == (20, 30, 3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(image.encoded_image_string))), picture)


def test_event_files_checksummed_in_c_as_tensorboard_would(tmp_path):
    """The records train.py's TensorBoard logger writes carry the checksums TensorBoard's own (pure
    Python, 115 ns a byte) code computes, from google-crc32c's C code."""
    import struct

    import numpy as np
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference
    from tensorboard.summary.writer import record_writer
    from torch.utils.tensorboard import SummaryWriter

    from catdog.event_checksums import use_fast_checksums
    from catdog.log_image import _image_summary

    assert use_fast_checksums(), "google-crc32c (a dependency) has no C implementation here"
    assert record_writer.masked_crc32c is not reference
    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar("val/acc", 0.5, 1)
    picture = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)  # a record of ~180 KB
    writer._get_file_writer().add_summary(_image_summary("gradcam/grid", picture), 1)
    writer.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    raw, records = events.read_bytes(), []
    while raw:  # TFRecord framing: length, its masked CRC, the data, its masked CRC
        header, (header_crc,) = raw[:8], struct.unpack("<I", raw[8:12])
        (length,) = struct.unpack("<Q", header)
        data, (data_crc,) = raw[12:12 + length], struct.unpack("<I", raw[12 + length:16 + length])
        assert (header_crc, data_crc) == (reference(header), reference(data))
        records.append(length)
        raw = raw[16 + length:]
    assert len(records) == 3 and max(records) > 100_000  # the file's version record, the scalar, the picture
