"""Decode every image once: check each file, and keep the resized pixels in a uint8 cache on disk.

The first run decodes all files in parallel (progress bar) into ``<key>-<S>px.npy``, a
memory-mapped (N, S, S, 3) uint8 array, beside a JSON record of which files were bad and why.
The key hashes the file list, sizes, modification times and the image size, so a changed
data set gets a new cache and later runs (and every job of a sweep) reuse a matching one.

Written under a file lock, to temporary files renamed into place (the JSON last, as the
commit mark), so parallel jobs build it once (the others wait, saying so) and a crash never
leaves a cache that loads. A record that does not match its array (truncated, damaged, another
key) is rebuilt. The lock dies with its holder, even one killed outright, and the next builder
removes the temporary array such a run left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from catdog.atomic_write import write_atomic
from catdog.data.decode import MAX_PIXELS, try_load_rgb
from catdog.data.workers import default_workers
from catdog.data.files import FileList
from catdog.errors import UserError
from catdog.preflight import check_space

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when decoding or resizing changes, so old caches are not reused


@dataclass
class Decoded:
    """The labelled files that decoded, their pixels (None when not cached), and the bad ones."""

    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    images: np.ndarray | None  # (all files, S, S, 3) uint8, memory-mapped; bad files' rows are zeros
    rows: np.ndarray  # row of images[] holding paths[i]
    bad: list[tuple[str, str]]  # (path, reason)


def cache_key(files: FileList, size: int) -> str:
    digest = hashlib.sha256(f"v{FORMAT_VERSION}|{size}|{files.layout}|{','.join(files.classes)}".encode())
    for path, label in zip(files.paths, files.labels):
        try:
            st = os.stat(path)
            digest.update(f"{path}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:  # a broken link: still part of the list, and reported as bad later
            digest.update(f"{path}|{label}|missing\n".encode())
    return digest.hexdigest()[:20]


# --- decoding, in worker processes ------------------------------------------------------

_worker_out: np.ndarray | None = None


def _init_worker(array_path: str | None) -> None:
    global _worker_out
    _worker_out = np.load(array_path, mmap_mode="r+") if array_path else None


def _decode_one(job: tuple[int, str, int, int]) -> tuple[int, str | None]:
    """Decode file ``index`` into its row of the cache; return the reason it is bad, if it is."""
    index, path, size, max_pixels = job
    pixels, reason = try_load_rgb(path, size, max_pixels)
    if pixels is not None and _worker_out is not None:
        _worker_out[index] = pixels
    return index, reason


def _decode_all(paths: list[str], size: int, array_path: str | None, workers: int, max_pixels: int) -> dict[int, str]:
    jobs = [(i, p, size, max_pixels) for i, p in enumerate(paths)]
    workers = max(1, min(workers, len(paths) // 32))  # a pool only pays for itself on many files
    # disable=None: no bar where stderr is not a terminal (a SLURM log, nohup), whose every refresh would
    # land in the log; a line at each end instead, as train.py's epochs get (callbacks/progress_bar.py).
    bar = tqdm(total=len(paths), desc=f"checking {len(paths)} images", unit="img", mininterval=1.0, leave=False,
               disable=None)
    piped = bar.disable  # read now: close() sets it
    if piped:
        log.info("checking %d images%s", len(paths), " into the decoded-image cache" if array_path else "")
    start, bad = time.monotonic(), {}  # bad: file index -> why it could not be read
    try:
        if workers == 1:
            _init_worker(array_path)
            results = map(_decode_one, jobs)
            pool = None
        else:
            # fork where there is one (as torch's DataLoader does): spawn would re-import the
            # entry script, torch and Lightning included, in every worker. The workers use
            # neither torch nor CUDA, only Pillow and numpy.
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            pool = mp.get_context(method).Pool(workers, _init_worker, (array_path,))
            results = pool.imap_unordered(_decode_one, jobs, chunksize=16)
        for index, reason in results:
            if reason is not None:
                bad[index] = reason
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
        _init_worker(None)
    if piped:
        log.info("checked %d images in %.0f s: %d unreadable", len(paths), time.monotonic() - start, len(bad))
    return bad


# --- the record and its checks ------------------------------------------------------------


def _sample_rows(n: int) -> list[int]:
    return sorted({0, n - 1, *range(0, n, max(1, n // 64))}) if n else []


def _checksum(images: np.ndarray) -> int:
    """CRC of a fixed sample of rows: catches a truncated or overwritten array in milliseconds."""
    crc = 0
    for row in _sample_rows(len(images)):
        crc = zlib.crc32(np.ascontiguousarray(images[row]).tobytes(), crc)
    return crc


def _load_record(record_path: Path, key: str, size: int, with_pixels: bool) -> tuple[dict, np.ndarray | None] | None:
    """The stored record and pixels if they are complete and match ``key``; None otherwise."""
    if not record_path.exists():
        return None
    try:
        record = json.loads(record_path.read_text())
        if record.get("key") != key or record.get("size") != size:
            return None
        if not with_pixels:
            return record, None
        images = np.load(record_path.with_suffix(".npy"), mmap_mode="c")  # "c": writable view, file untouched
        if images.shape != (len(record["paths"]), size, size, 3) or images.dtype != np.uint8:
            raise ValueError(f"shape {images.shape}")
        if _checksum(images) != record.get("checksum"):
            raise ValueError("checksum mismatch")
        return record, images
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        log.warning("decoded-image cache %s is damaged (%s): rebuilding it", record_path, err)
        return None


def _build(files: FileList, size: int, record_path: Path, key: str, with_pixels: bool, workers: int, max_pixels: int):
    n = len(files.paths)
    array_path = record_path.with_suffix(".npy")
    tmp_array = array_path.with_name(f".{array_path.name}.tmp-{os.getpid()}.npy")
    images = None
    if with_pixels:
        np.lib.format.open_memmap(tmp_array, mode="w+", dtype=np.uint8, shape=(n, size, size, 3)).flush()
    try:
        bad = _decode_all(files.paths, size, str(tmp_array) if with_pixels else None, workers, max_pixels)
        record = {"key": key, "size": size, "paths": files.paths, "labels": list(files.labels),
                  "classes": files.classes, "bad": {files.paths[i]: r for i, r in sorted(bad.items())}}
        if with_pixels:
            images = np.load(tmp_array, mmap_mode="r+")
            images.flush()
            record["checksum"] = _checksum(images)
            with open(tmp_array, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp_array, array_path)
            images = np.load(array_path, mmap_mode="c")
        write_atomic(record_path, json.dumps(record))  # last: its presence marks a complete cache
        return record, images
    finally:
        tmp_array.unlink(missing_ok=True)


def decode_all(
    files: FileList,
    size: int,
    cache_dir: str | os.PathLike,
    with_pixels: bool = True,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
    build: bool = True,
) -> Decoded:
    """Check every file once and, with ``with_pixels``, keep them decoded at ``size`` px.

    With ``build=False`` (DDP ranks after the first) the cache must already exist.
    """
    key = cache_key(files, size)
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the cache folder {cache_dir} ({err.strerror}): set data.cache_dir to a writable folder") from None
    record_path = cache_dir / f"{key}-{size}px{'' if with_pixels else '-scan'}.json"
    loaded = _load_record(record_path, key, size, with_pixels)
    if loaded is None:
        if not build:
            raise RuntimeError(f"decoded-image cache {record_path} is missing: prepare_data did not run")
        with _build_lock(record_path):
            # Another job may have built it while we waited for the lock.
            loaded = _load_record(record_path, key, size, with_pixels)
            if loaded is None:
                _remove_orphans(record_path)
                if with_pixels:
                    check_space(cache_dir, len(files.paths) * size * size * 3 + (64 << 20), "data.cache_dir")
                loaded = _build(files, size, record_path, key, with_pixels, default_workers(workers) or 1, max_pixels)
    record, images = loaded
    return _select_good(record, images)


@contextlib.contextmanager
def _build_lock(record_path: Path):
    """The lock on building this cache; say so when another run holds it."""
    lock = FileLock(str(record_path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("another run is building the decoded-image cache %s: waiting for it to finish", record_path.with_suffix(".npy"))
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _remove_orphans(record_path: Path) -> None:
    """Temporary arrays of builds killed outright (SIGKILL): under the lock, no build is running."""
    for name in (record_path.name, record_path.with_suffix(".npy").name):
        for orphan in record_path.parent.glob(f".{name}.tmp-*"):
            orphan.unlink(missing_ok=True)


def _select_good(record: dict, images: np.ndarray | None) -> Decoded:
    bad = record["bad"]
    rows = np.asarray([i for i, p in enumerate(record["paths"]) if p not in bad], dtype=np.int64)
    return Decoded(
        paths=[record["paths"][i] for i in rows],
        labels=np.asarray(record["labels"], dtype=np.int64)[rows],
        classes=record["classes"],
        images=images,
        rows=rows,
        bad=sorted(bad.items()),
    )
