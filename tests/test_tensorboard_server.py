"""A real TensorBoard over two short runs, asked through its HTTP API what a user would see: the
images plugin lists the Grad-CAM tags with one step per epoch and serves their pictures (JPEG) to
the browser, and the HParams plugin lists both runs with their settings and metrics. The server
listens on 127.0.0.1 only and is stopped."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from helpers import TINY, compose_train
from train import train

pytestmark = pytest.mark.slow  # two runs and a server start: over 15 s on 2 CPU cores


def _get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _serve(logdir: Path):
    """A TensorBoard server on a free port of 127.0.0.1, and its address once it listens."""
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                               "--port", "0", "--samples_per_plugin", "images=1000"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    for line in server.stdout:
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found:
            return server, found.group(0)
        if time.monotonic() > deadline:
            break
    server.kill()
    pytest.fail("TensorBoard did not start within 60 s")


def test_tensorboard_lists_the_maps_per_epoch_and_the_runs_with_their_metrics(tmp_path, synthetic_root):
    for name, lr in (("a", "0.001"), ("b", "0.003")):
        cfg = compose_train(tmp_path / name, [f"data.root={synthetic_root}", *TINY, "trainer.max_epochs=2",
                                              f"optimizer.lr={lr}", "test=false", "callbacks.gradcam.score_images=0"])
        train(cfg)
    server, url = _serve(tmp_path)
    try:
        tags = _get(f"{url}/data/plugin/images/tags")
        assert set(tags) == {"a/run/tensorboard", "b/run/tensorboard"}
        for run, run_tags in tags.items():
            assert {"gradcam/grid", "gradcam/sample_00", "val/confusion_matrix"} <= set(run_tags)
            grids = _get(f"{url}/data/plugin/images/images?run={run}&tag=gradcam/grid")
            assert [e["step"] for e in grids] == [0, 1]  # one grid per epoch, every epoch kept
            with urllib.request.urlopen(f"{url}/data/plugin/images/individualImage?{grids[-1]['query']}") as response:
                assert response.headers["Content-Type"] == "image/jpeg"  # what the browser is told it gets
                picture = Image.open(io.BytesIO(response.read()))
            assert picture.format == "JPEG" and picture.size == (3 * 128, 8 * (128 + 16))  # 8 rows of 3 cells, titled

        groups = _get(f"{url}/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"metric": {"tag": "val/acc_best"}}, {"hparam": "optimizer.lr"}]})["sessionGroups"]
        assert sorted(g["hparams"]["optimizer.lr"] for g in groups) == [0.001, 0.003]
        for group in groups:
            values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
            assert 0.0 <= values["val/acc_best"] <= 1.0
    finally:
        server.kill()
        server.wait(timeout=30)
