"""Hostile input: random bytes, truncated and damaged files, huge and zero dimensions, odd modes
and odd file names, thrown at the decoder, the data pipeline and the predict.py / cam.py CLIs.

Every case must end as a decoded image or a BadImage with a one-line reason (the decoder), a
file listed as bad or ignored with a reason (the pipeline), exit code 0 with bad_files.csv or
exit code 2 with one ``error:`` line (the CLIs): never another exception, a traceback or a hang.
"""

from __future__ import annotations

import io
import shutil
import signal
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from catdog.data.cache import decode_all
from catdog.data.decode import MAX_PIXELS, BadImage, load_rgb
from catdog.data.files import find_labelled
from helpers import read_csv, run_cli

SIZE = 16
FUZZ = settings(max_examples=100, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None)
HANG_S = 20  # one decode of a tiny file taking this long is a hang


# --- helpers ----------------------------------------------------------------------------------


class _Hang(BaseException):
    """Raised by the alarm: a BaseException, so no ``except Exception`` on the way can swallow it."""


@contextmanager
def no_hang(seconds: float, what: str):
    """Fail (rather than wait forever) when the block runs longer than ``seconds``."""

    def on_alarm(signum, frame):
        raise _Hang()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)  # repeats: a stuck cleanup is interrupted too
    try:
        yield
    except _Hang:
        pytest.fail(f"hang: {what} ran longer than {seconds} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def decode_or_reason(path: Path, what: str) -> np.ndarray | str:
    """load_rgb(path, 16) as an array, or the BadImage reason; any other exception fails the test."""
    with no_hang(HANG_S, what):
        try:
            pixels = load_rgb(str(path), SIZE)
        except BadImage as err:
            reason = str(err)
            assert reason.strip(), f"{what}: BadImage without a reason"
            assert "\n" not in reason and "\r" not in reason, f"{what}: reason is not one line: {reason!r}"
            return reason
    assert isinstance(pixels, np.ndarray), f"{what}: returned {type(pixels).__name__}"
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.uint8, f"{what}: {pixels.shape} {pixels.dtype}"
    return pixels


def check_bytes(tmp_path: Path, data: bytes, what: str) -> np.ndarray | str:
    path = tmp_path / "fuzzed.jpg"  # Pillow goes by content: the suffix must not matter
    path.write_bytes(data)
    return decode_or_reason(path, what)


def encode(fmt: str, mode: str = "RGB", size=(24, 18), seed: int = 0, **kw) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


VALID = {
    "jpeg": encode("JPEG"),
    "jpeg-progressive": encode("JPEG", progressive=True),
    "png": encode("PNG"),
    "png-palette": encode("PNG", mode="P", transparency=0),
    "gif": encode("GIF"),
    "bmp": encode("BMP"),
    "webp": encode("WEBP"),
    "webp-lossless": encode("WEBP", lossless=True),
    "tiff": encode("TIFF"),  # .tif and .tiff are accepted suffixes too
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG whose IHDR (with a correct CRC, so Pillow accepts it) declares width x height, and a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def gif_header(width: int, height: int) -> bytes:
    """A GIF whose screen and first frame declare width x height, with a 2-colour palette and one pixel of data."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00" + b";")


def bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + info + b"\0" * 64


HEADERS = {"png": png_header, "gif": gif_header, "bmp": bmp_header}
MAX_SIDE = {"png": 2**31 - 1, "gif": 65535, "bmp": 2**31 - 1}
PNG_KINDS = [(1, 0), (8, 0), (16, 0), (8, 2), (16, 2), (8, 3), (8, 4), (8, 6), (16, 6)]  # (bit depth, colour type)

# Magic numbers of formats Pillow identifies by content, so random tails reach their parsers.
MAGICS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"GIF89a", b"GIF87a", b"BM",
          b"RIFF\x00\x01\x00\x00WEBPVP8 ", b"RIFF\x00\x01\x00\x00WEBPVP8L", b"II*\x00", b"MM\x00*", b"P6\n", b"P5\n",
          b"\x00\x00\x01\x00", b"8BPS", b"\x01\xda", b"icns", b"DDS ", b"\x0a\x05\x01\x08", b"qoif", b"%!PS"]

SGI_BAD_MODE = b"\x01\xda\x00\x03\x00\x03\x00\x10\x00\x10\x00\x03" + b"\0" * 500  # 3 bytes per channel: no such mode


# --- 1. the decoder, property-based -----------------------------------------------------------


@FUZZ
@given(prefix=st.sampled_from(MAGICS), tail=st.binary(max_size=600))
@example(prefix=b"P6\n", tail=b"")  # PPM header cut short: ValueError from Image.open
@example(prefix=b"P6\n", tail=b"24 18")
@example(prefix=b"P6\n", tail=b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4")  # "Token too long" / not a number
@example(prefix=b"", tail=SGI_BAD_MODE)  # SGI header with an unknown mode: ValueError from Image.open
def test_random_bytes_are_bad_images_or_pixels(tmp_path, prefix, tail):
    check_bytes(tmp_path, prefix + tail, f"random bytes {(prefix + tail)[:40]!r}")


@FUZZ
@given(fmt=st.sampled_from(sorted(VALID)), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_are_bad_images_or_pixels(tmp_path, fmt, cut):
    data = VALID[fmt]
    at = int(cut * len(data))
    check_bytes(tmp_path, data[:at], f"{fmt} truncated at {at} of {len(data)} bytes")


def flipped(fmt: str, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(VALID[fmt])
    for pos, value in flips:
        data[pos % len(data)] = value
    return bytes(data)


_position = st.integers(0, 95) | st.integers(0, 2**20)  # headers (the first 96 bytes) half the time


@FUZZ
@given(fmt=st.sampled_from(sorted(VALID)), flips=st.lists(st.tuples(_position, st.integers(0, 255)), min_size=1, max_size=8))
@example(fmt="png", flips=[(11, 0)])  # IHDR length 0: "Truncated IHDR chunk" ValueError from Image.open
@example(fmt="tiff", flips=[(12, 1)])  # ImageWidth stored as a BYTE: "Invalid dimensions" ValueError from Image.open
@example(fmt="tiff", flips=[(72, 5)])  # a strip offset stored as a RATIONAL: TypeError from img.load()
def test_damaged_files_are_bad_images_or_pixels(tmp_path, fmt, flips):
    check_bytes(tmp_path, flipped(fmt, flips), f"{fmt} with bytes set at {[(p % len(VALID[fmt]), v) for p, v in flips]}")


def _huge(max_side: int):
    """(width, height) with width * height > MAX_PIXELS and both sides at most ``max_side``."""
    low = MAX_PIXELS // max_side + 1
    dims = st.integers(low, max_side).flatmap(lambda w: st.tuples(st.just(w), st.integers(MAX_PIXELS // w + 1, max_side)))
    return st.tuples(dims, st.booleans()).map(lambda t: t[0][::-1] if t[1] else t[0])


class _Allocated(BaseException):
    pass


@contextmanager
def refuse_big_allocations(seen: list):
    """Record every image buffer Pillow allocates; refuse (instead of allocating) one above MAX_PIXELS."""
    core = Image.core
    real = {name: getattr(core, name) for name in ("new", "fill")}

    def spy(name):
        def allocate(mode, size, *args, **kwargs):
            seen.append(tuple(size))
            if size[0] * size[1] > MAX_PIXELS:
                raise _Allocated(f"Image.core.{name}({mode}, {size})")
            return real[name](mode, size, *args, **kwargs)

        return allocate

    with mock.patch.object(core, "new", spy("new")), mock.patch.object(core, "fill", spy("fill")):
        yield


def test_allocation_spy_sees_a_normal_decode(tmp_path):
    """The spy must see ordinary allocations, or the huge-image test below could not fail."""
    seen: list = []
    with refuse_big_allocations(seen):
        check_bytes(tmp_path, VALID["png"], "valid png")
    assert (24, 18) in seen


_huge_cases = st.sampled_from(sorted(HEADERS)).flatmap(
    lambda fmt: st.tuples(st.just(fmt), _huge(MAX_SIDE[fmt]), st.sampled_from(PNG_KINDS)))


@FUZZ
@given(case=_huge_cases)
@example(case=("png", (100_000, 100_000), (8, 2)))
@example(case=("gif", (65535, 65535), (8, 2)))
def test_huge_dimensions_are_refused_quickly_without_allocating(tmp_path, case):
    fmt, (width, height), kind = case
    content = png_header(width, height, *kind) if fmt == "png" else HEADERS[fmt](width, height)
    seen: list = []
    start = time.perf_counter()
    try:
        with refuse_big_allocations(seen):
            result = check_bytes(tmp_path, content, f"{fmt} declaring {width}x{height}")
    except _Allocated as err:
        pytest.fail(f"{fmt} declaring {width}x{height}: pixels were allocated before the size check: {err}")
    elapsed = time.perf_counter() - start
    assert isinstance(result, str) and result.startswith("too large"), f"{fmt} {width}x{height}: {result!r}"
    assert elapsed < 2.0, f"{fmt} {width}x{height}: refused after {elapsed:.1f} s"


@FUZZ
@given(fmt=st.sampled_from(sorted(HEADERS)), other=st.integers(0, 2**16 - 1), zero_width=st.booleans(),
       kind=st.sampled_from(PNG_KINDS))
def test_zero_size_images_are_bad_images(tmp_path, fmt, other, zero_width, kind):
    width, height = (0, other) if zero_width else (other, 0)
    content = png_header(width, height, *kind) if fmt == "png" else HEADERS[fmt](width, height)
    result = check_bytes(tmp_path, content, f"{fmt} declaring {width}x{height}")
    assert isinstance(result, str), f"{fmt} declaring {width}x{height} decoded to pixels"


ODD = [  # (mode, format, save options): every one a valid file that must decode to RGB
    ("1", "PNG", {}), ("1", "BMP", {}), ("1", "TIFF", {}),
    ("I;16", "PNG", {}), ("I;16", "TIFF", {}), ("I;16B", "TIFF", {}), ("I", "TIFF", {}), ("F", "TIFF", {}),
    ("CMYK", "JPEG", {}), ("CMYK", "TIFF", {}),
    ("LA", "PNG", {}), ("LA", "TIFF", {}), ("RGBA", "PNG", {}), ("RGBA", "WEBP", {}),
    ("P", "PNG", {"transparency": 0}), ("P", "GIF", {"transparency": 0}), ("P", "PNG", {}), ("P", "BMP", {}),
    ("L", "JPEG", {}), ("LAB", "TIFF", {}), ("YCbCr", "TIFF", {}),
]


def odd_image(mode: str, size: tuple[int, int], seed: int, scale: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    if mode in ("I;16", "I;16B"):
        values = rng.integers(0, int(min(scale, 65535.0)) + 1, (h, w), dtype=np.uint16)
        return Image.frombytes(mode, size, values.astype("<u2" if mode == "I;16" else ">u2").tobytes())
    if mode == "I":
        return Image.fromarray((rng.integers(-(2**31), 2**31 - 1, (h, w), dtype=np.int64) * min(scale, 1.0)).astype(np.int32))
    if mode == "F":
        values = (rng.standard_normal((h, w)) * scale).astype(np.float32)
        if seed % 3 == 0:
            values.flat[0] = [np.nan, np.inf, -np.inf][seed % 9 // 3]
        return Image.fromarray(values)
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode in ("LA", "RGBA"):
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        return rgba.convert(mode)
    if mode == "P":
        return rgb.quantize(colors=int(rng.integers(2, 257)))
    return rgb.convert(mode)


@FUZZ
@given(case=st.sampled_from(ODD), size=st.tuples(st.integers(1, 48), st.integers(1, 48)), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1e-6, 1.0, 255.0, 65535.0, 1e30]))
def test_odd_modes_decode_to_rgb(tmp_path, case, size, seed, scale):
    mode, fmt, options = case
    img = odd_image(mode, size, seed, scale)
    assert img.mode == mode
    path = tmp_path / f"odd.{fmt.lower()}"
    img.save(path, fmt, **options)
    result = decode_or_reason(path, f"{mode} {fmt} {size}")
    assert isinstance(result, np.ndarray), f"a valid {mode} {fmt} image of {size} was refused: {result}"


# --- 2. the data pipeline: a Kaggle-flat folder with hostile entries ----------------------------


def _jpeg_truncated(source: Path) -> bytes:
    data = source.read_bytes()
    return data[: len(data) // 2]


def _png_truncated(source: Path) -> bytes:
    buf = io.BytesIO()
    with Image.open(source) as img:
        img.save(buf, "PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def test_pipeline_keeps_good_files_and_reports_every_hostile_one(tmp_path, synthetic_root):
    root = tmp_path / "flat"
    root.mkdir()
    for cls in ("cat", "dog"):
        for i in range(32):  # 64 good files and the hostile ones below: over 64 paths, so 2 worker processes
            shutil.copy(synthetic_root / f"{cls}.{i}.jpg", root / f"{cls}.{i}.jpg")
    good_source = synthetic_root / "cat.40.jpg"
    rng = np.random.default_rng(0)
    (root / "cat.90.jpg").write_bytes(b"")
    (root / "dog.91.jpg").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (root / "cat.92.jpg").write_bytes(_jpeg_truncated(good_source))
    (root / "dog.92.png").write_bytes(_png_truncated(good_source))
    (root / "cat.93.png").write_bytes(png_header(100_000, 100_000))
    (root / "dog.99.jpg").write_bytes(b"P6\n")  # a PPM header cut short (raises ValueError inside Pillow)
    odd_names = {"cat.94 with space.jpg": "cat.41.jpg", "dog.95-ünïcødé-🐶.jpg": "dog.41.jpg"}
    for name, source in odd_names.items():
        shutil.copy(synthetic_root / source, root / name)
    shutil.copy(good_source, root / ".cat.96.jpg")
    (root / "cat.97.jpg").symlink_to(good_source)
    (root / "dog.97.jpg").symlink_to(root / "nowhere.jpg")
    (root / "cat.98.jpg").mkdir()

    files = find_labelled(root)
    ignored = {Path(p).name: reason for p, reason in files.ignored}
    assert set(ignored) == {".cat.96.jpg", "cat.98.jpg"}
    assert "hidden" in ignored[".cat.96.jpg"] and "folder" in ignored["cat.98.jpg"]
    assert files.layout == "kaggle-flat" and files.classes == ["cat", "dog"]

    with no_hang(120, "decode_all on the hostile folder"):
        decoded = decode_all(files, 32, tmp_path / "cache", workers=2)
    bad = {Path(p).name: reason for p, reason in decoded.bad}
    expected_bad = {"cat.90.jpg", "dog.91.jpg", "cat.92.jpg", "dog.92.png", "cat.93.png", "dog.97.jpg", "dog.99.jpg"}
    assert set(bad) == expected_bad
    for name, reason in bad.items():
        assert reason.strip() and "\n" not in reason, f"{name}: {reason!r}"
    assert bad["cat.90.jpg"].startswith("empty file")
    assert bad["cat.93.png"].startswith("too large")
    assert "No such file" in bad["dog.97.jpg"]

    kept = [Path(p).name for p in decoded.paths]
    extra = {"cat.94 with space.jpg": 0, "dog.95-ünïcødé-🐶.jpg": 1, "cat.97.jpg": 0}
    assert sorted(kept) == sorted([f"{c}.{i}.jpg" for c in ("cat", "dog") for i in range(32)] + list(extra))
    label = dict(zip(kept, decoded.labels.tolist()))
    assert all(label[name] == want for name, want in extra.items())
    assert decoded.images.shape[1:] == (32, 32, 3)
    sources = {**{n: synthetic_root / s for n, s in odd_names.items()}, "cat.97.jpg": good_source}
    for i, name in enumerate(kept):
        if name in sources:  # the odd names hold the pixels of the file they are a copy of (or link to)
            np.testing.assert_array_equal(decoded.images[decoded.rows[i]], load_rgb(str(sources[name]), 32))

    again = decode_all(files, 32, tmp_path / "cache", workers=2)  # from the cache: the same verdicts
    assert again.bad == decoded.bad and again.paths == decoded.paths


# --- 3. predict.py and cam.py on a folder with hostile entries ---------------------------------

GOOD = {"1.jpg": "cat.0.jpg", "2.jpg": "dog.0.jpg", "3.jpg": "cat.1.jpg", "4.jpg": "dog.1.jpg",
        "9 with space.jpg": "cat.2.jpg", "10-ünïcødé-🐶.jpg": "dog.2.jpg"}
LINKED = {"15.jpg": "3.jpg"}  # a symlink to a good file: predicted like any other
BAD = {"5.jpg", "6.jpg", "7.png", "8.jpg", "12.jpg", "13.jpg"}
SET_ASIDE = {"11.jpg", ".14.jpg"}  # a folder named like an image, a hidden file: listed, never read


@pytest.fixture
def hostile_test1(tmp_path, synthetic_root) -> Path:
    """Kaggle's test1/ layout (N.jpg) with good files, odd names, and the hostile entries of BAD."""
    folder = tmp_path / "test1"
    folder.mkdir()
    for name, source in GOOD.items():
        shutil.copy(synthetic_root / source, folder / name)
    for name, target in LINKED.items():
        (folder / name).symlink_to(folder / target)
    source = synthetic_root / "dog.3.jpg"
    (folder / "5.jpg").write_bytes(b"")
    (folder / "6.jpg").write_bytes(np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    (folder / "7.png").write_bytes(_png_truncated(source))
    (folder / "8.jpg").write_bytes(png_header(100_000, 100_000))
    (folder / "11.jpg").mkdir()
    (folder / "12.jpg").symlink_to(folder / "gone.jpg")
    (folder / "13.jpg").write_bytes(_jpeg_truncated(source))
    shutil.copy(source, folder / ".14.jpg")  # hidden: left out
    return folder


def warnings_in(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "[WARNING]" in line]


def reference_p_dog(net: torch.nn.Module, paths: list[Path]) -> np.ndarray:
    x = torch.stack([torch.from_numpy(load_rgb(str(p), 32).copy()).permute(2, 0, 1) for p in paths])  # uint8: the net normalises
    with torch.no_grad():
        return net(x).softmax(dim=1)[:, 1].double().numpy()


def test_predict_cli_skips_and_reports_hostile_files(tmp_path, trained, hostile_test1):
    proc = run_cli("predict", f"ckpt_path={trained['ckpt']}", f"data.root={hostile_test1}",
                   f"paths.output_root={tmp_path / 'out'}", "device=cpu", "clip_eps=0")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    csv_path = Path(proc.stdout.strip().splitlines()[-1])
    rows = read_csv(csv_path)
    assert rows[0] == ["id", "label"]
    good = {**GOOD, **LINKED}
    ids = {Path(name).stem: name for name in good}
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4", "15", "10-ünïcødé-🐶", "9 with space"]
    p_dog = dict(zip(good, reference_p_dog(trained["net"], [hostile_test1 / n for n in good])))
    for ident, label in rows[1:]:
        assert float(label) == pytest.approx(p_dog[ids[ident]], abs=1e-5), ident

    bad = read_csv(csv_path.parent / "bad_files.csv")
    assert bad[0] == ["path", "reason"]
    reasons = {Path(p).name: reason for p, reason in bad[1:]}
    assert set(reasons) == BAD | SET_ASIDE and all(r.strip() for r in reasons.values()), reasons
    assert reasons["5.jpg"].startswith("empty file") and reasons["8.jpg"].startswith("too large")
    assert reasons[".14.jpg"].startswith("hidden") and "folder" in reasons["11.jpg"]
    total = len(GOOD) + len(LINKED) + len(BAD)
    (warning,) = warnings_in(proc.stdout)  # one warning line, and only one
    assert f"skipped {len(BAD)} of {total} files" in warning and f"set aside {len(SET_ASIDE)} other entries" in warning


def test_cam_cli_skips_and_reports_hostile_files(tmp_path, trained, hostile_test1):
    proc = run_cli("cam", f"ckpt_path={trained['ckpt']}", f"images={hostile_test1}",
                   f"paths.output_root={tmp_path / 'out'}", "device=cpu")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    (run,) = (tmp_path / "out" / "cam").iterdir()
    expected = {Path(name).stem + ".png" for name in {**GOOD, **LINKED}}
    assert {p.name for p in run.glob("*.png")} == expected
    for name in expected:
        with Image.open(run / name) as img:
            img.verify()
    rows = read_csv(run / "predictions.csv")
    assert {r[1] for r in rows[1:]} == expected
    reasons = {Path(p).name: reason for p, reason in read_csv(run / "bad_files.csv")[1:]}
    assert set(reasons) == BAD | SET_ASIDE and all(r.strip() for r in reasons.values()), reasons
    total = len(GOOD) + len(LINKED) + len(BAD)
    (warning,) = warnings_in(proc.stdout)
    assert f"skipped {len(BAD)} of {total} files" in warning and f"set aside {len(SET_ASIDE)} other entries" in warning


@pytest.mark.parametrize("script, where", [("cam", "missing"), ("cam", "empty"), ("predict", "missing"), ("predict", "all-bad")])
def test_cli_without_usable_images_exits_2_with_one_line(tmp_path, trained, script, where):
    folder = tmp_path / "images"
    if where != "missing":
        folder.mkdir()
        (folder / "x.jpg").mkdir()  # a folder named like an image is not an image
        (folder / ".hidden.jpg").write_bytes((trained["root"] / "cat.0.jpg").read_bytes())
    if where == "all-bad":
        (folder / "1.jpg").write_bytes(b"")
        (folder / "2.jpg").write_bytes(b"not a picture")
        (folder / "3.png").write_bytes(png_header(100_000, 100_000))
    key = "images" if script == "cam" else "data.root"
    proc = run_cli(script, f"ckpt_path={trained['ckpt']}", f"{key}={folder}", f"paths.output_root={tmp_path / 'out'}",
                   "device=cpu")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert {"missing": "does not exist", "empty": "no images found", "all-bad": "could be read"}[where] in errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr
