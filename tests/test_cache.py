"""The decoded-image cache: built once, reused, keyed by the files, never used when damaged."""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np
import pytest

from catdog.data import cache as cache_mod
from catdog.data.cache import decode_all
from catdog.data.decode import load_rgb
from catdog.data.files import find_labelled
from helpers import write_image


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        for i in range(5):
            write_image(root / f"{cls}.{i}.jpg", size=(50, 40), color=tuple(int(v) for v in rng.integers(0, 255, 3)))
    (root / "cat.99.jpg").write_bytes(b"")  # a bad file among them
    return root


def _count_decodes(monkeypatch) -> list:
    calls = []
    real = cache_mod._decode_all
    monkeypatch.setattr(cache_mod, "_decode_all", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_pixels_match_decoding_and_bad_files_are_recorded(folder, tmp_path):
    decoded = decode_all(find_labelled(folder), 16, tmp_path / "cache")
    assert len(decoded.paths) == 10
    assert decoded.bad == [(str(folder / "cat.99.jpg"), "empty file (0 bytes)")]
    for i in (0, 7):
        assert np.array_equal(decoded.images[decoded.rows[i]], load_rgb(decoded.paths[i], 16))
    assert list(decoded.labels) == [0] * 5 + [1] * 5


def test_second_run_reuses_the_cache(folder, tmp_path, monkeypatch):
    calls = _count_decodes(monkeypatch)
    first = decode_all(find_labelled(folder), 16, tmp_path / "cache")
    second = decode_all(find_labelled(folder), 16, tmp_path / "cache")
    assert len(calls) == 1
    assert np.array_equal(first.images, second.images)


def test_changed_file_or_size_gives_a_new_cache(folder, tmp_path, monkeypatch):
    calls = _count_decodes(monkeypatch)
    decode_all(find_labelled(folder), 16, tmp_path / "cache")
    decode_all(find_labelled(folder), 24, tmp_path / "cache")
    write_image(folder / "dog.3.jpg", size=(50, 40), color=(1, 2, 3))
    os.utime(folder / "dog.3.jpg", ns=(time.time_ns(), time.time_ns() + 10**9))
    decoded = decode_all(find_labelled(folder), 16, tmp_path / "cache")
    assert len(calls) == 3
    i = decoded.paths.index(str(folder / "dog.3.jpg"))
    assert np.abs(decoded.images[decoded.rows[i]][0, 0].astype(int) - (1, 2, 3)).max() <= 3  # JPEG rounding


@pytest.mark.parametrize("damage", ["truncate-array", "overwrite-pixels", "garble-record", "other-key"])
def test_damaged_cache_is_rebuilt_not_used(folder, tmp_path, monkeypatch, damage):
    files = find_labelled(folder)
    good = decode_all(files, 16, tmp_path / "cache")
    expected = np.array(good.images)
    record = next((tmp_path / "cache").glob("*.json"))
    array = record.with_suffix(".npy")
    if damage == "truncate-array":
        with open(array, "r+b") as f:
            f.truncate(array.stat().st_size // 2)
    elif damage == "overwrite-pixels":
        with open(array, "r+b") as f:
            f.seek(-100, os.SEEK_END)
            f.write(b"\x07" * 100)
    elif damage == "garble-record":
        record.write_text("{not json")
    else:
        meta = json.loads(record.read_text())
        meta["key"] = "somethingelse"
        record.write_text(json.dumps(meta))
    calls = _count_decodes(monkeypatch)
    again = decode_all(files, 16, tmp_path / "cache")
    assert len(calls) == 1
    assert np.array_equal(np.asarray(again.images), expected)


def test_interrupted_build_leaves_nothing_that_loads(folder, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "_decode_all", crash)
    with pytest.raises(KeyboardInterrupt):
        decode_all(find_labelled(folder), 16, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.json"))
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix == ".npy" or ".tmp-" in p.name]


def _build_in_process(folder, cache_dir, queue):
    calls = []
    real = cache_mod._decode_all
    cache_mod._decode_all = lambda *a, **k: calls.append(1) or real(*a, **k)
    decode_all(find_labelled(folder), 16, cache_dir, workers=1)
    queue.put(len(calls))


def test_parallel_jobs_build_it_once(folder, tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_process, args=(folder, tmp_path / "cache", queue)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(queue.get(timeout=5) for _ in procs) == [0, 0, 1]


def test_scan_only_mode_stores_no_pixels(folder, tmp_path):
    decoded = decode_all(find_labelled(folder), 16, tmp_path / "cache", with_pixels=False)
    assert decoded.images is None and len(decoded.paths) == 10 and len(decoded.bad) == 1
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_parallel_decoding_matches_serial(tmp_path):
    root = tmp_path / "many"
    rng = np.random.default_rng(3)
    for cls in ("cat", "dog"):
        for i in range(40):
            write_image(root / f"{cls}.{i}.jpg", size=(30, 30), color=tuple(int(v) for v in rng.integers(0, 255, 3)))
    serial = decode_all(find_labelled(root), 8, tmp_path / "a", workers=1)
    parallel = decode_all(find_labelled(root), 8, tmp_path / "b", workers=2)
    assert np.array_equal(np.asarray(serial.images), np.asarray(parallel.images))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_a_build_shows_a_bar_on_a_terminal_and_two_log_lines_elsewhere(folder, tmp_path, monkeypatch, caplog, terminal):
    stderr = Terminal() if terminal else io.StringIO()  # a SLURM log or nohup's file: not a terminal
    monkeypatch.setattr(sys, "stderr", stderr)
    with caplog.at_level("INFO", logger=cache_mod.__name__):
        decode_all(find_labelled(folder), 16, tmp_path / "cache")
    lines = [r.getMessage() for r in caplog.records if r.name == cache_mod.__name__]
    if terminal:
        assert lines == [] and "checking 11 images" in stderr.getvalue()
    else:
        assert stderr.getvalue() == ""
        assert lines[0] == "checking 11 images into the decoded-image cache"
        assert lines[1].startswith("checked 11 images in ") and lines[1].endswith(": 1 unreadable")
