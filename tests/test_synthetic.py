"""The built-in synthetic cats-vs-dogs set: layout, boxes, determinism, caching, CLI, no colour shortcut."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from catdog.data.boxes import read_boxes
from catdog.data.synthetic import generate
from catdog.errors import UserError


def _names(n: int) -> set[str]:
    return {f"{c}.{i}.jpg" for c in ("cat", "dog") for i in range(n)}


def _bytes(folder, names) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synthetic") / "set", n_per_class=12, size=64, seed=7)


def test_layout_is_kaggle_flat_with_rgb_jpegs(small_set):
    assert {p.name for p in small_set.iterdir()} == _names(12) | {"boxes.csv", "synthetic.json"}
    for name in _names(12):
        with Image.open(small_set / name) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (64, 64))


def test_boxes_csv_has_one_box_per_image_inside_the_image(small_set):
    with open(small_set / "boxes.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "x0", "y0", "x1", "y1", "width", "height"]
    assert {r[0] for r in rows[1:]} == _names(12) and len(rows) == 1 + 24
    for _, *numbers in rows[1:]:
        x0, y0, x1, y1, w, h = map(int, numbers)
        assert (w, h) == (64, 64)
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        # Head diameter is 30-55% of the side; the ears add at most ~40% to that.
        assert 0.3 * w <= max(x1 - x0, y1 - y0) <= 0.85 * w


def test_box_holds_the_head_tightly(small_set):
    """The head's flat colour (the commonest colour in the box) lies in the box and fills much of it."""
    inside_share, fill = [], []
    for name, box in read_boxes(small_set).items():
        image = np.asarray(Image.open(small_set / name), dtype=int)
        x0, y0, x1, y1 = (round(v * side) for v, side in zip(box, image.shape[1::-1] * 2))
        box = image[y0:y1, x0:x1].reshape(-1, 3)
        keys = (box // 32) @ [64, 8, 1]
        head = box[keys == np.bincount(keys).argmax()].mean(axis=0)
        near = np.linalg.norm(image - head, axis=2) < 40
        inside_share.append(near[y0:y1, x0:x1].sum() / near.sum())
        fill.append(near[y0:y1, x0:x1].mean())
    assert np.median(inside_share) > 0.9  # a misplaced box would leave the head outside
    assert np.median(fill) > 0.35  # a loose box would be mostly background


def test_same_seed_gives_identical_bytes_and_small_runs_are_prefixes(tmp_path):
    big = generate(tmp_path / "big", n_per_class=4, size=48, seed=3)
    small = generate(tmp_path / "small", n_per_class=2, size=48, seed=3)
    other = generate(tmp_path / "other", n_per_class=2, size=48, seed=4)
    assert _bytes(small, _names(2)) == _bytes(big, _names(2))
    assert read_boxes(small).items() <= read_boxes(big).items()
    assert all(a != b for a, b in zip(_bytes(small, _names(2)).values(), _bytes(other, _names(2)).values()))


def test_rerun_with_same_parameters_skips(tmp_path):
    out = generate(tmp_path / "set", n_per_class=2, size=32, seed=0)
    (out / "cat.0.jpg").write_bytes(b"marker")  # would be overwritten by a regeneration
    generate(out, n_per_class=2, size=32, seed=0)
    assert (out / "cat.0.jpg").read_bytes() == b"marker"


@pytest.mark.parametrize("change", [{"seed": 1}, {"size": 40}, {"quality": 80}, {"n_per_class": 1}])
def test_rerun_with_other_parameters_regenerates(tmp_path, change):
    params = {"n_per_class": 2, "size": 32, "seed": 0, "quality": 90}
    out = generate(tmp_path / "set", **params)
    (out / "cat.0.jpg").write_bytes(b"marker")
    generate(out, **{**params, **change})
    assert (out / "cat.0.jpg").read_bytes() != b"marker"
    assert json.loads((out / "synthetic.json").read_text()).items() >= {**params, **change}.items()
    n = change.get("n_per_class", 2)
    assert {p.name for p in out.glob("*.jpg")} == _names(n)  # no stale images from the larger run


def test_interrupted_run_is_regenerated(tmp_path):
    out = generate(tmp_path / "set", n_per_class=2, size=32, seed=0)
    (out / "cat.0.jpg").write_bytes(b"marker")
    (out / "boxes.csv").unlink()  # boxes.csv is written last: missing means the run did not finish
    generate(out, n_per_class=2, size=32, seed=0)
    assert (out / "cat.0.jpg").read_bytes() != b"marker" and (out / "boxes.csv").is_file()


def test_refuses_a_folder_of_someone_elses_photos(tmp_path):
    (tmp_path / "cat.0.jpg").write_bytes(b"a real photo")
    with pytest.raises(UserError, match="did not write"):
        generate(tmp_path, n_per_class=1, size=32)
    assert (tmp_path / "cat.0.jpg").read_bytes() == b"a real photo"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "catdog.data.synthetic", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_writes_then_keeps_and_rejects_bad_values(tmp_path):
    args = ("--out", str(tmp_path / "set"), "--n-per-class", "2", "--size", "32", "--seed", "5")
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("\n") == 1 and first.stdout.startswith("wrote 4 ")
    assert {p.name for p in (tmp_path / "set").glob("*.jpg")} == _names(2)
    assert _bytes(tmp_path / "set", _names(2)) == _bytes(generate(tmp_path / "api", 2, 32, 5), _names(2))
    assert _cli(*args).stdout.startswith("kept ")
    bad = _cli("--out", str(tmp_path / "bad"), "--n-per-class", "0")
    assert bad.returncode == 2 and "n_per_class" in bad.stderr and "Traceback" not in bad.stderr


def test_mean_colour_does_not_tell_cats_from_dogs(tmp_path):
    out = generate(tmp_path / "set", n_per_class=100, size=32, seed=11)
    means = {
        c: np.stack([np.asarray(Image.open(out / f"{c}.{i}.jpg"), dtype=float).mean((0, 1)) for i in range(100)])
        for c in ("cat", "dog")
    }
    spread = np.concatenate(list(means.values())).std(axis=0)
    gap = np.abs(means["cat"].mean(axis=0) - means["dog"].mean(axis=0))
    # Chance alone gives about 0.14 spread per channel with 100 per class.
    assert np.all(gap < 0.5 * spread), (gap, spread)
